#!/usr/bin/env bash
# Spark GPU discovery script (spark.executor.resource.gpu.discoveryScript and, on
# standalone workers, spark.worker.resource.gpu.discoveryScript): prints the GPUs this
# container or host can see as {"name": "gpu", "addresses": ["0", "1", ...]}.
# The pip pyspark package does not ship Spark's own examples/src/main/scripts copy.
set -euo pipefail
command -v nvidia-smi >/dev/null 2>&1 || { echo "getGpusResources.sh: nvidia-smi not found" >&2; exit 1; }
nvidia-smi --query-gpu=index --format=csv,noheader |
  awk 'BEGIN { printf "{\"name\": \"gpu\", \"addresses\": [" }
       NF   { printf "%s\"%s\"", (n++ ? ", " : ""), $1 }
       END  { print "]}" }'
