#!/usr/bin/env bash
# Serve custembed's catalogue over JDBC/ODBC with the Spark Thrift server (HiveServer2
# protocol), in the foreground; Ctrl-C stops it. See docs/bi.md.
#
#   deploy/thrift.sh                       # embedded default: the lake/ of the current directory
#   beeline -u jdbc:hive2://127.0.0.1:10000/custembed
#
#   CUSTEMBED_CLUSTER=yarn deploy/thrift.sh   # a cluster: its metastore, deploy/conf/yarn.conf
#
# Embedded default: the same warehouse directory and Derby metastore that
# custembed/spark.py uses (<lake>/warehouse, <lake>/metastore_db). Derby allows ONE JVM at
# a time: while this server runs, custembed jobs on the same lake cannot start (and the
# server cannot start while a job runs). Stop one before starting the other, or use a
# shared Hive metastore (spark.embedded_catalogue: false) where both can run together.
#
# Environment:
#   CUSTEMBED_CONF      custembed YAML whose project.lake_dir / database to serve
#                       (default: conf/base.yaml; deploy/cluster.yaml when CUSTEMBED_CLUSTER
#                       is not local). A relative lake_dir resolves against the current
#                       directory, exactly as for the jobs.
#   CUSTEMBED_LAKE      the lake directory, instead of reading it from the YAML
#   CUSTEMBED_CLUSTER   local (default) | standalone | yarn | k8s
#   THRIFT_PORT         10000          THRIFT_BIND_HOST   127.0.0.1 (0.0.0.0: every interface;
#                                      there is no authentication, see docs/bi.md)
#   THRIFT_EXECUTORS    executors on a cluster (default 4; BI queries are small)
#   SPARK_MASTER        master URL (default local[2] embedded, the properties file otherwise)
#   CUSTEMBED_PYTHON    Python with custembed and pyspark (default .venv/bin/python, python3)
#   CUSTEMBED_SUBMIT_OPTS  extra spark-submit flags, word-split
#   THRIFT_OPTS         extra server arguments after spark-internal, word-split, e.g.
#                       "--hiveconf hive.server2.transport.mode=http"
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"

cluster="${CUSTEMBED_CLUSTER:-local}"
port="${THRIFT_PORT:-10000}"
host="${THRIFT_BIND_HOST:-127.0.0.1}"

python="${CUSTEMBED_PYTHON:-}"
if [[ -z "$python" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then python="$ROOT/.venv/bin/python"; else python="$(command -v python3 || true)"; fi
fi

if [[ -n "${CUSTEMBED_CONF+set}" ]]; then
  conf="$CUSTEMBED_CONF"
elif [[ "$cluster" == local ]]; then
  conf=""
else
  conf="$HERE/cluster.yaml"
fi

# project.lake_dir, project.database and spark.embedded_catalogue, read the way the jobs read them
if [[ -n "${CUSTEMBED_LAKE:-}" ]]; then
  lake="$(cd "$CUSTEMBED_LAKE" 2>/dev/null && pwd)" || { echo "thrift.sh: CUSTEMBED_LAKE not found: $CUSTEMBED_LAKE" >&2; exit 2; }
  database="custembed"
  if [[ "$cluster" == local ]]; then embedded=true; else embedded=false; fi
else
  if [[ -z "$python" ]]; then
    echo "thrift.sh: no Python found to read the custembed config: set CUSTEMBED_PYTHON or CUSTEMBED_LAKE" >&2
    exit 1
  fi
  settings="$(PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$python" - "$conf" 2>&1 <<'PY'
import sys
from pathlib import Path

from custembed.config import ConfigError, load_config

try:
    cfg = load_config(sys.argv[1] or None)
except ConfigError as e:
    sys.exit(str(e))
print(Path(cfg.project.lake_dir).resolve(), cfg.project.database, str(cfg.spark.embedded_catalogue).lower(), sep="\t")
PY
)" || { echo "thrift.sh: cannot read the custembed config with $python: ${settings##*$'\n'}" >&2; exit 2; }
  IFS=$'\t' read -r lake database embedded <<<"$settings"
fi

# spark-submit: $SPARK_HOME, else the one the pip pyspark package ships, else PATH
submit=""
if [[ -n "${SPARK_HOME:-}" && -x "$SPARK_HOME/bin/spark-submit" ]]; then
  submit="$SPARK_HOME/bin/spark-submit"
else
  home="$("$python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))' 2>/dev/null || true)"
  if [[ -n "$home" && -x "$home/bin/spark-submit" ]]; then
    export SPARK_HOME="$home"
    submit="$home/bin/spark-submit"
  elif command -v spark-submit >/dev/null 2>&1; then
    submit="$(command -v spark-submit)"
  fi
fi
[[ -n "$submit" ]] || { echo "thrift.sh: spark-submit not found: set SPARK_HOME, or install pyspark into ${python:-python3}" >&2; exit 1; }

cmd=("$submit" --class org.apache.spark.sql.hive.thriftserver.HiveThriftServer2 --name custembed-thrift)
if [[ "$embedded" == true ]]; then
  if [[ ! -d "$lake/metastore_db" ]]; then
    echo "thrift.sh: no catalogue at $lake/metastore_db: run a custembed job first (make demo), from the directory whose lake/ to serve, or set CUSTEMBED_LAKE" >&2
    exit 2
  fi
  java_opts="-Dderby.system.home=$lake"
  [[ -f "$ROOT/conf/log4j2.properties" ]] && java_opts+=" -Dlog4j.configurationFile=file:$ROOT/conf/log4j2.properties"
  cmd+=(
    --master "${SPARK_MASTER:-local[2]}"
    --driver-java-options "$java_opts"
    --conf spark.sql.catalogImplementation=hive
    --conf "spark.sql.warehouse.dir=$lake/warehouse"
    # the spark.hadoop. prefix is what makes Spark hand the setting to the metastore client
    --conf "spark.hadoop.javax.jdo.option.ConnectionURL=jdbc:derby:;databaseName=$lake/metastore_db;create=true"
  )
else
  props="$HERE/conf/$cluster.conf"
  [[ -f "$props" ]] || { echo "thrift.sh: CUSTEMBED_CLUSTER=$cluster has no $props" >&2; exit 2; }
  cmd+=(--properties-file "$props" --load-spark-defaults --conf "spark.executor.instances=${THRIFT_EXECUTORS:-4}")
  [[ -n "${SPARK_MASTER:-}" ]] && cmd+=(--master "$SPARK_MASTER")
fi
cmd+=(--conf spark.sql.session.timeZone=UTC)
if [[ -n "${CUSTEMBED_SUBMIT_OPTS:-}" ]]; then
  read -r -a extra <<<"$CUSTEMBED_SUBMIT_OPTS"
  cmd+=("${extra[@]}")
fi
cmd+=(spark-internal --hiveconf "hive.server2.thrift.port=$port" --hiveconf "hive.server2.thrift.bind.host=$host")
if [[ -n "${THRIFT_OPTS:-}" ]]; then
  read -r -a server_opts <<<"$THRIFT_OPTS"
  cmd+=("${server_opts[@]}")
fi

echo "thrift.sh: serving database '$database' on jdbc:hive2://$host:$port/$database (Ctrl-C stops)" >&2
printf '+' >&2
printf ' %q' "${cmd[@]}" >&2
printf '\n' >&2
[[ "${CUSTEMBED_DRY_RUN:-0}" == 1 ]] && exit 0
exec "${cmd[@]}"
