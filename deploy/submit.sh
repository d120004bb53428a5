#!/usr/bin/env bash
# spark-submit launcher for any custembed job:
#
#   deploy/submit.sh <job> [job args...]
#   CUSTEMBED_CLUSTER=yarn deploy/submit.sh nightly --run-date 2023-07-31
#
# jobs: generate sequences train embed score report nightly demo retail sql
# (`deploy/submit.sh <job> --help` prints the job's options).
#
# It runs `spark-submit [properties] deploy/run_job.py <job> --conf <yaml> [job args]`;
# run_job.py calls custembed.cli.main and exits with the job's code (0 ok, 2 a
# configuration/input mistake, 1 a failure). The final command is printed first.
#
# Environment:
#   CUSTEMBED_CLUSTER      local (default) | standalone | yarn | k8s: picks
#                          deploy/conf/<cluster>.conf, passed with --properties-file
#   CUSTEMBED_CONF         custembed YAML passed as --conf (default: none for local,
#                          deploy/cluster.yaml otherwise; "none" passes nothing)
#   SPARK_MASTER           overrides the master of the properties file
#                          (spark://host:7077, yarn, k8s://https://api:6443, local[8])
#   CUSTEMBED_DEPLOY_MODE  client (default) | cluster. In cluster mode the YAML is
#                          shipped with --files and passed by its base name
#   CUSTEMBED_PYTHON       driver Python with custembed and pyspark installed
#                          (default: .venv/bin/python of this checkout, else python3)
#   CUSTEMBED_ENV_ARCHIVE  packed environment (venv-pack/conda-pack .tar.gz): shipped
#                          with --archives <file>#env, executors run ./env/bin/python
#   CUSTEMBED_PYFILES      zip for --py-files (dist/custembed_pyfiles.zip) when the
#                          executors' Python has the dependencies but not custembed
#   CUSTEMBED_EXTRA_PROPS  a second properties file added as --conf flags, e.g.
#                          deploy/conf/gpu-train.conf for `train` on GPUs
#   CUSTEMBED_SUBMIT_OPTS  extra spark-submit flags, word-split
#                          (e.g. "--conf spark.task.cpus=8 --driver-memory 16g")
#   CUSTEMBED_APP          the driver script (default deploy/run_job.py of this
#                          checkout; local:///opt/custembed/run_job.py in the image)
#   MLFLOW_TRACKING_URI    when set, passed on as --set tracking.uri=<value>
#   CUSTEMBED_DRY_RUN=1    print the command, do not run it
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
JOBS="generate sequences train embed score report nightly demo retail sql"

usage() {
  sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

if [[ $# -lt 1 ]]; then
  usage >&2
  exit 2
fi
job="$1"
shift
case "$job" in
  -h | --help | help)
    usage
    exit 0
    ;;
esac
if [[ " $JOBS " != *" $job "* ]]; then
  echo "submit.sh: unknown job '$job' (jobs: $JOBS)" >&2
  exit 2
fi

cluster="${CUSTEMBED_CLUSTER:-local}"
props="$HERE/conf/$cluster.conf"
if [[ ! -f "$props" ]]; then
  echo "submit.sh: CUSTEMBED_CLUSTER=$cluster has no $props (local, standalone, yarn or k8s)" >&2
  exit 2
fi

if [[ -n "${CUSTEMBED_CONF+set}" ]]; then
  conf="$CUSTEMBED_CONF"
elif [[ "$cluster" == local ]]; then
  conf=""
else
  conf="$HERE/cluster.yaml"
fi
[[ "$conf" == none ]] && conf=""
if [[ -n "$conf" && ! -f "$conf" ]]; then
  echo "submit.sh: CUSTEMBED_CONF file not found: $conf" >&2
  exit 2
fi

mode="${CUSTEMBED_DEPLOY_MODE:-client}"
if [[ "$mode" != client && "$mode" != cluster ]]; then
  echo "submit.sh: CUSTEMBED_DEPLOY_MODE must be client or cluster, got '$mode'" >&2
  exit 2
fi

python="${CUSTEMBED_PYTHON:-}"
if [[ -z "$python" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then python="$ROOT/.venv/bin/python"; else python="$(command -v python3 || true)"; fi
fi

# spark-submit: $SPARK_HOME, else the one the pip pyspark package ships, else PATH.
submit=""
if [[ -n "${SPARK_HOME:-}" && -x "$SPARK_HOME/bin/spark-submit" ]]; then
  submit="$SPARK_HOME/bin/spark-submit"
else
  home=""
  if [[ -n "$python" ]]; then
    home="$("$python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))' 2>/dev/null || true)"
  fi
  if [[ -n "$home" && -x "$home/bin/spark-submit" ]]; then
    export SPARK_HOME="$home"
    submit="$home/bin/spark-submit"
  elif command -v spark-submit >/dev/null 2>&1; then
    submit="$(command -v spark-submit)"
  fi
fi
if [[ -z "$submit" ]]; then
  echo "submit.sh: spark-submit not found: set SPARK_HOME, or install pyspark into ${python:-python3} (pip install -c constraints.txt -e .)" >&2
  exit 1
fi

# --load-spark-defaults (Spark >= 4.0): the site's $SPARK_CONF_DIR/spark-defaults.conf
# (metastore, YARN queues, event log ...) still applies; our file wins where both set a key.
cmd=("$submit" --properties-file "$props" --load-spark-defaults --name "custembed-$job" --deploy-mode "$mode")
[[ -n "${SPARK_MASTER:-}" ]] && cmd+=(--master "$SPARK_MASTER")

# The driver's own JVM options cannot be set from inside the job under spark-submit
# (the JVM is already running), so the log4j2 settings of conf/ are passed here.
if [[ "$mode" == client && -f "$ROOT/conf/log4j2.properties" ]]; then
  cmd+=(--driver-java-options "-Dlog4j.configurationFile=file:$ROOT/conf/log4j2.properties")
fi

if [[ -n "${CUSTEMBED_ENV_ARCHIVE:-}" ]]; then
  [[ -f "$CUSTEMBED_ENV_ARCHIVE" ]] || { echo "submit.sh: CUSTEMBED_ENV_ARCHIVE not found: $CUSTEMBED_ENV_ARCHIVE" >&2; exit 2; }
  cmd+=(--archives "$CUSTEMBED_ENV_ARCHIVE#env" --conf spark.pyspark.python=./env/bin/python)
fi
if [[ "$mode" == client && -n "$python" ]]; then
  # the driver runs here, with this Python; executors use spark.pyspark.python
  cmd+=(--conf "spark.pyspark.driver.python=$python")
fi
if [[ -n "${CUSTEMBED_PYFILES:-}" ]]; then
  [[ -f "$CUSTEMBED_PYFILES" ]] || { echo "submit.sh: CUSTEMBED_PYFILES not found: $CUSTEMBED_PYFILES (run deploy/build.sh)" >&2; exit 2; }
  cmd+=(--py-files "$CUSTEMBED_PYFILES")
fi

if [[ -n "${CUSTEMBED_EXTRA_PROPS:-}" ]]; then
  [[ -f "$CUSTEMBED_EXTRA_PROPS" ]] || { echo "submit.sh: CUSTEMBED_EXTRA_PROPS not found: $CUSTEMBED_EXTRA_PROPS" >&2; exit 2; }
  while IFS= read -r line || [[ -n "$line" ]]; do
    line="${line#"${line%%[![:space:]]*}"}"            # leading blanks
    [[ -z "$line" || "$line" == \#* || "$line" == \!* ]] && continue
    key="${line%%[=[:space:]]*}"
    value="${line#"$key"}"
    value="${value#"${value%%[![:space:]]*}"}"         # blanks after the key
    value="${value#=}"                                 # or key=value
    value="${value#"${value%%[![:space:]]*}"}"
    value="${value%"${value##*[![:space:]]}"}"         # trailing blanks
    cmd+=(--conf "$key=$value")
  done <"$CUSTEMBED_EXTRA_PROPS"
fi

if [[ -n "${CUSTEMBED_SUBMIT_OPTS:-}" ]]; then
  read -r -a extra <<<"$CUSTEMBED_SUBMIT_OPTS"
  cmd+=("${extra[@]}")
fi

cmd+=("${CUSTEMBED_APP:-$HERE/run_job.py}" "$job")
if [[ -n "$conf" ]]; then
  if [[ "$mode" == cluster ]]; then
    # the driver runs elsewhere: ship the file, it lands in the driver's working directory
    cmd=("${cmd[@]:0:1}" --files "$conf" "${cmd[@]:1}")
    cmd+=(--conf "$(basename "$conf")")
  else
    cmd+=(--conf "$conf")
  fi
fi
[[ -n "${MLFLOW_TRACKING_URI:-}" ]] && cmd+=(--set "tracking.uri=$MLFLOW_TRACKING_URI")
cmd+=("$@")

printf '+' >&2
printf ' %q' "${cmd[@]}" >&2
printf '\n' >&2
[[ "${CUSTEMBED_DRY_RUN:-0}" == 1 ]] && exit 0
exec "${cmd[@]}"
