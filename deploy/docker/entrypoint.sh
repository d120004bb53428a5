#!/usr/bin/env bash
# Container entry point following the conventions of Spark's Kubernetes images
# (resource-managers/kubernetes/docker/.../entrypoint.sh), which spark-submit and the
# spark-operator rely on:
#   driver   [spark-submit args]  the driver pod: spark-submit in client mode inside the pod
#   executor                      an executor pod: the executor backend, configured by the
#                                 SPARK_* variables Spark sets on the pod
#   anything else                 run as given (custembed nightly, bash, beeline ...)
set -euo pipefail

SPARK_CLASSPATH="${SPARK_HOME}/jars/*"
[[ -n "${SPARK_EXTRA_CLASSPATH:-}" ]] && SPARK_CLASSPATH="$SPARK_CLASSPATH:$SPARK_EXTRA_CLASSPATH"
[[ -n "${HADOOP_CONF_DIR:-}" ]] && SPARK_CLASSPATH="$HADOOP_CONF_DIR:$SPARK_CLASSPATH"
SPARK_CLASSPATH="${SPARK_CONF_DIR:-$SPARK_HOME/conf}:$SPARK_CLASSPATH:$PWD"

case "${1:-}" in
  driver)
    shift
    exec /usr/bin/tini -s -- "$SPARK_HOME/bin/spark-submit" \
      --conf "spark.driver.bindAddress=${SPARK_DRIVER_BIND_ADDRESS}" \
      --conf "spark.executorEnv.SPARK_DRIVER_POD_IP=${SPARK_DRIVER_BIND_ADDRESS}" \
      --deploy-mode client \
      "$@"
    ;;
  executor)
    shift
    # Spark passes the executor's JVM options as SPARK_JAVA_OPT_0, _1, ... in order
    java_opts=()
    while IFS= read -r opt; do
      [[ -n "$opt" ]] && java_opts+=("$opt")
    done < <(env | grep '^SPARK_JAVA_OPT_' | sort -t_ -k4 -n | sed 's/^[^=]*=//')
    exec /usr/bin/tini -s -- "${JAVA_HOME}/bin/java" \
      "${java_opts[@]}" \
      -Xms"$SPARK_EXECUTOR_MEMORY" -Xmx"$SPARK_EXECUTOR_MEMORY" \
      -cp "$SPARK_CLASSPATH${SPARK_DIST_CLASSPATH:+:$SPARK_DIST_CLASSPATH}" \
      org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
      --driver-url "$SPARK_DRIVER_URL" \
      --executor-id "$SPARK_EXECUTOR_ID" \
      --cores "$SPARK_EXECUTOR_CORES" \
      --app-id "$SPARK_APPLICATION_ID" \
      --hostname "$SPARK_EXECUTOR_POD_IP" \
      --resourceProfileId "${SPARK_RESOURCE_PROFILE_ID:-0}" \
      --podName "$SPARK_EXECUTOR_POD_NAME"
    ;;
  "")
    exec /usr/bin/tini -s -- custembed --help
    ;;
  *)
    exec /usr/bin/tini -s -- "$@"
    ;;
esac
