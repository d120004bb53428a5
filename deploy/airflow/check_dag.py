"""Load the DAGs of a folder in Airflow's ``DagBag`` and print what Airflow sees, as JSON.

Run it with the Python of an environment that has Airflow (not the project's ``.venv``:
Airflow's pins would fight custembed's; ``make airflow-venv`` builds ``.venv-airflow``):

    .venv-airflow/bin/python deploy/airflow/check_dag.py [DAG_FOLDER] [--run-after ISO_DATETIME ...]

It exits 1 when a file fails to import or the folder holds no DAG, else 0, and prints
one JSON line on stdout (Airflow's own logs go to stderr)::

    {"airflow_version": "...", "import_errors": {}, "dag_warnings": {}, "warnings": [...],
     "dags": {"<dag_id>": {"fileloc": ..., "schedule": ..., "max_active_runs": ..., "catchup": ...,
                           "runs": {"<run_after>": {"data_interval_start": ..., "ds": ...}},
                           "tasks": {"<task_id>": {"operator": ..., "upstream": [...], "downstream": [...],
                                                   "trigger_rule": ..., "retries": ..., "skip_on_exit_code": [...],
                                                   "bash_command": ..., "rendered": {"<run_after>": ...}}}}}}

``--run-after`` (repeatable) asks for the data interval the DAG's timetable gives a run
started at that time, and for each task's ``bash_command`` rendered with that run's
``ds`` and Airflow's macros. Nothing needs a metadata database or the network:
``AIRFLOW_HOME`` defaults to a fresh temporary directory and example DAGs are off.
Tests: ``tests/test_deploy.py`` (with ``CUSTEMBED_AIRFLOW_PYTHON`` set to this Python).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import inspect
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any


def _isolate() -> None:
    """A throwaway, offline Airflow home, set before the first ``import airflow``."""
    if "AIRFLOW_HOME" not in os.environ:
        os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="custembed-airflow-")
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")


def _dagbag(folder: Path) -> tuple[Any, list[str]]:
    """The DagBag of ``folder`` and the warnings raised while filling it (Airflow's own included)."""
    from airflow.models import DagBag

    kwargs: dict[str, Any] = {"dag_folder": str(folder)}
    if "include_examples" in inspect.signature(DagBag.__init__).parameters:  # Airflow 2, 3.0
        kwargs["include_examples"] = False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bag = DagBag(**kwargs)
    return bag, [f"{w.category.__name__}: {w.message}" for w in caught]


def _macros() -> Any:
    try:  # Airflow 3
        from airflow.sdk.execution_time import macros
    except ImportError:  # Airflow 2
        from airflow import macros
    return macros


def _data_interval(dag: Any, run_after: dt.datetime) -> Any:
    import pendulum

    return dag.timetable.infer_manual_data_interval(run_after=pendulum.instance(run_after))


def _task(task: Any, renders: dict[str, dict[str, str]], env: Any) -> dict[str, Any]:
    info: dict[str, Any] = {
        "operator": f"{type(task).__module__}.{type(task).__name__}",
        "upstream": sorted(task.upstream_task_ids),
        "downstream": sorted(task.downstream_task_ids),
        "trigger_rule": str(getattr(task.trigger_rule, "value", task.trigger_rule)),
        "retries": task.retries,
    }
    skip = getattr(task, "skip_on_exit_code", None)
    if skip is not None:
        info["skip_on_exit_code"] = sorted([skip] if isinstance(skip, int) else skip)
    command = getattr(task, "bash_command", None)
    if isinstance(command, str):
        info["bash_command"] = command
        info["rendered"] = {key: env.from_string(command).render(**ctx) for key, ctx in renders.items()}
    return info


def _dag(dag: Any, run_afters: list[dt.datetime]) -> dict[str, Any]:
    runs: dict[str, dict[str, str]] = {}
    renders: dict[str, dict[str, Any]] = {}
    for run_after in run_afters:
        interval = _data_interval(dag, run_after)
        ds = interval.start.strftime("%Y-%m-%d")
        runs[run_after.isoformat()] = {
            "data_interval_start": interval.start.isoformat(),
            "data_interval_end": interval.end.isoformat(),
            "ds": ds,
        }
        renders[run_after.isoformat()] = {"ds": ds, "ds_nodash": ds.replace("-", ""), "macros": _macros()}
    env = dag.get_template_env()
    timetable = dag.timetable
    return {
        "fileloc": dag.fileloc,
        "schedule": getattr(timetable, "summary", None) or type(timetable).__name__,
        "timetable": f"{type(timetable).__module__}.{type(timetable).__name__}",
        "max_active_runs": dag.max_active_runs,
        "catchup": dag.catchup,
        "runs": runs,
        "tasks": {task.task_id: _task(task, renders, env) for task in dag.tasks},
    }


def _run_after(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default=str(Path(__file__).resolve().parent), help="the DAGs folder")
    parser.add_argument(
        "--run-after",
        action="append",
        default=[],
        type=_run_after,
        help="a run's start time (ISO 8601, UTC if naive): report its data interval and "
        "render the bash commands (repeatable)",
    )
    args = parser.parse_args(argv)
    _isolate()
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON line only
        import airflow

        bag, caught = _dagbag(Path(args.folder))
        dags = {dag_id: _dag(dag, args.run_after) for dag_id, dag in sorted(bag.dags.items())}
    report = {
        "airflow_version": airflow.__version__,
        "import_errors": {str(path): str(err) for path, err in bag.import_errors.items()},
        # warnings the DAG files raised (deprecated imports, arguments ...), per file (Airflow >= 2.9)
        "dag_warnings": {
            str(p): [str(w) for w in ws] for p, ws in (getattr(bag, "captured_warnings", None) or {}).items()
        },
        # every warning while parsing, Airflow's own included
        "warnings": caught,
        "dags": dags,
    }
    print(json.dumps(report, sort_keys=True))
    if report["import_errors"]:
        for path, err in report["import_errors"].items():
            print(f"check_dag: import error in {path}:\n{err}", file=sys.stderr)
        return 1
    if not dags:
        print(f"check_dag: no DAG found in {args.folder}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
