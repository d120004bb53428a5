"""Airflow DAG: custembed's nightly scoring, plus a weekly retrain of the encoders before it.

One task runs ``custembed nightly --run-date {{ ds }}``: the job itself runs
sequences -> embed -> score -> report and, when rerun for the same date (an Airflow
retry, a manual clear), resumes from the first stage that has not succeeded, so the
stages are not split into separate Airflow tasks. On the weekday set in
``TRAIN_WEEKDAY`` one ``train`` task per encoder runs first on the previous day's
sequences and registers a new champion in MLflow, which the nightly embed then loads;
on other days those tasks are skipped.

Tasks call ``deploy/submit.sh`` with ``BashOperator``, which keeps the dependency
light (the apache-spark provider's ``SparkSubmitOperator`` would do as well, but
submit.sh already holds the cluster settings and the same command works by hand).

Deployment: copy this file to the DAGs folder of a worker that has a custembed checkout
(or the deploy/ folder and an environment with custembed installed) and spark-submit
access to the cluster. Settings come from the worker's environment:

* ``CUSTEMBED_HOME``: the checkout holding ``deploy/submit.sh`` (default /opt/custembed)
* ``CUSTEMBED_CLUSTER``, ``CUSTEMBED_CONF``, ``MLFLOW_TRACKING_URI``, ``SPARK_HOME`` ...:
  read by submit.sh (see its header)
* ``CUSTEMBED_TRAIN_PROPS``: extra Spark properties for the train tasks only, e.g.
  ``$CUSTEMBED_HOME/deploy/conf/gpu-train.conf`` on GPU executors (empty: none)
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum

try:  # Airflow 3
    from airflow.providers.standard.operators.bash import BashOperator
    from airflow.sdk import DAG
except ImportError:  # Airflow 2.6+ (skip_on_exit_code)
    from airflow import DAG
    from airflow.operators.bash import BashOperator
from airflow.timetables.interval import CronDataIntervalTimetable

CUSTEMBED_HOME = os.environ.get("CUSTEMBED_HOME", "/opt/custembed")
SUBMIT = f"{CUSTEMBED_HOME}/deploy/submit.sh"
# encoders retrained weekly (names under train.encoders); [] turns retraining off
TRAIN_ENCODERS = ["bert4rec", "electra"]
TRAIN_WEEKDAY = 7  # ISO weekday of the run date whose run retrains first (7 = Sunday)
SKIPPED = 99  # BashOperator marks the task skipped on this exit code

default_args = {
    "owner": "custembed",
    "retries": 2,
    "retry_delay": timedelta(minutes=15),
    "retry_exponential_backoff": True,
    "email_on_failure": True,
    "email_on_retry": False,
}

with DAG(
    dag_id="custembed_nightly",
    description="custembed: sequences -> embed -> score -> report for the day that just ended",
    # A data-interval timetable in Airflow 2 and 3 alike: the 02:00 UTC run covers the
    # day before, so {{ ds }} is the day whose events are complete (custembed rejects
    # events after the run date as future_time).
    schedule=CronDataIntervalTimetable("0 2 * * *", timezone=pendulum.timezone("UTC")),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,  # backfill past dates explicitly: airflow dags backfill custembed_nightly ...
    max_active_runs=1,  # runs share the lake and the catalogue; one date at a time
    default_args=default_args,
    tags=["custembed", "spark"],
) as dag:
    nightly = BashOperator(
        task_id="nightly",
        bash_command=f"{SUBMIT} nightly --run-date {{{{ ds }}}}",
        append_env=True,
        execution_timeout=timedelta(hours=10),
        # run even when a weekly training failed: the previous champion is still registered
        trigger_rule="all_done",
    )

    # One encoder after the other: each training takes every GPU of train.num_processes.
    previous = None
    for encoder in TRAIN_ENCODERS:
        # The previous day's sequences (written by yesterday's nightly): today's do not exist
        # before the nightly task writes them. The very first time, run
        # `deploy/submit.sh sequences --run-date <date>` once by hand.
        train = BashOperator(
            task_id=f"train_{encoder}",
            bash_command=(
                f'if [ "$(date -u -d {{{{ ds }}}} +%u)" != "{TRAIN_WEEKDAY}" ]; then '
                f'echo "not a training day"; exit {SKIPPED}; fi; '
                f"CUSTEMBED_EXTRA_PROPS=${{CUSTEMBED_TRAIN_PROPS:-}} "
                f"{SUBMIT} train --encoder {encoder} --run-date {{{{ macros.ds_add(ds, -1) }}}}"
            ),
            append_env=True,
            skip_on_exit_code=SKIPPED,
            execution_timeout=timedelta(hours=24),
            retries=1,
            trigger_rule="all_done",  # a failed training of one encoder does not stop the next
        )
        if previous is not None:
            previous >> train
        previous = train
    if previous is not None:
        previous >> nightly
