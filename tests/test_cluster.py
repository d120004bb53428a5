"""A real Spark standalone cluster on 127.0.0.1 (master + 2 workers from the pyspark package).

* the pipeline through ``spark-submit`` (deploy/run_job.py) against it, with a 2-process
  TorchDistributor training in cluster mode (barrier tasks on the executors);
* a worker killed in the middle of a job: the job still completes with the same output;
* the Spark Thrift server on the resulting catalogue, queried over JDBC with beeline.

Each test uses its own lake (the embedded Derby metastore admits one JVM at a time).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
RUN = "2023-07-31"


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(1)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout:.0f} s")


@dataclass
class Cluster:
    master_url: str
    env: dict[str, str]
    pid_dir: Path

    def worker_pid(self, instance: int) -> int:
        (pid_file,) = self.pid_dir.glob(f"*Worker-{instance}.pid")
        return int(pid_file.read_text().strip())


def daemon(env: dict[str, str], action: str, cls: str, instance: int, *args: str) -> None:
    script = spark_home() / "sbin" / "spark-daemon.sh"
    subprocess.run(
        ["bash", str(script), action, cls, str(instance), *args], env=env, check=True, capture_output=True, timeout=120
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    work = tmp_path_factory.mktemp("cluster")
    port, ui = free_port(), free_port()
    env = {
        **os.environ,
        "SPARK_HOME": str(spark_home()),
        "SPARK_LOG_DIR": str(work / "logs"),
        "SPARK_PID_DIR": str(work / "pids"),
        "SPARK_WORKER_DIR": str(work / "work"),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYSPARK_PYTHON": sys.executable,
    }
    master = "org.apache.spark.deploy.master.Master"
    worker = "org.apache.spark.deploy.worker.Worker"
    daemon(env, "start", master, 1, "--host", "127.0.0.1", "--port", str(port), "--webui-port", str(ui))
    wait_for_port(port, 90)
    url = f"spark://127.0.0.1:{port}"
    for instance in (1, 2):
        daemon(
            env,
            "start",
            worker,
            instance,
            url,
            "--host",
            "127.0.0.1",
            "--cores",
            "1",
            "--memory",
            "3g",
            "--webui-port",
            str(free_port()),
        )
    time.sleep(8)  # workers register with the master
    yield Cluster(url, env, work / "pids")
    for instance in (1, 2):
        subprocess.run(
            ["bash", str(spark_home() / "sbin" / "spark-daemon.sh"), "stop", worker, str(instance)],
            env=env,
            capture_output=True,
            timeout=60,
        )
    subprocess.run(
        ["bash", str(spark_home() / "sbin" / "spark-daemon.sh"), "stop", master, "1"],
        env=env,
        capture_output=True,
        timeout=60,
    )


def submit_args(cluster: Cluster, lake: Path) -> list[str]:
    return [
        str(spark_home() / "bin" / "spark-submit"),
        "--master",
        cluster.master_url,
        "--conf",
        f"spark.pyspark.python={sys.executable}",
        "--conf",
        "spark.executor.memory=2g",
        "--conf",
        "spark.executor.cores=1",
        "--conf",
        "spark.task.maxFailures=8",
        "--conf",
        "spark.sql.shuffle.partitions=4",
        "--conf",
        "spark.ui.enabled=false",
        "--conf",
        f"spark.driver.extraJavaOptions=-Dderby.system.home={lake} "
        f"-Dlog4j.configurationFile={ROOT / 'conf' / 'log4j2.properties'}",
        str(ROOT / "deploy" / "run_job.py"),
    ]


def job_args(lake: Path, *extra: str) -> list[str]:
    return [
        "--run-date",
        RUN,
        "--set",
        f"project.lake_dir={lake}",
        "--set",
        "spark.master=null",
        "--set",
        "spark.shuffle_partitions=4",
        "--set",
        "generate.partitions=4",
        *extra,
    ]


def run_job(
    cluster: Cluster, lake: Path, job: str, *extra: str, timeout: int = 900
) -> subprocess.CompletedProcess[str]:
    cmd = [*submit_args(cluster, lake), job, *job_args(lake, *extra)]
    done = subprocess.run(cmd, env=cluster.env, capture_output=True, text=True, timeout=timeout, cwd=lake.parent)
    assert done.returncode == 0, f"{job} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done


def query(lake: Path, sql: str) -> list[tuple[str, ...]]:
    """Read the lake's tables back in a local session of its own (after the cluster jobs ended)."""
    code = (
        "import sys, json\n"
        "from custembed.config import load_config\n"
        "from custembed.spark import build_session\n"
        f"cfg = load_config(None, ['project.lake_dir={lake}'])\n"
        "spark = build_session(cfg.spark, cfg.project)\n"
        "spark.catalog.setCurrentDatabase('custembed')\n"
        f"print(json.dumps([list(map(str, r)) for r in spark.sql({sql!r}).collect()]))\n"
        "spark.stop()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=lake.parent)
    assert out.returncode == 0, out.stderr[-3000:]
    import json

    return [tuple(r) for r in json.loads(out.stdout.strip().splitlines()[-1])]


SMALL = [
    "--set",
    "generate.customers=800",
    "--set",
    "generate.purchase_rate=0.05",
    "--set",
    "score.products=[water_purifier, refrigerator]",
    "--set",
    "score.comparison.classifiers=[random_forest]",
]
TRAIN = [
    "--set",
    "train.local_mode=false",
    "--set",
    "train.num_processes=2",
    "--set",
    "train.encoders.bert4rec.model.hidden_size=32",
    "--set",
    "train.encoders.bert4rec.epochs=1",
    "--set",
    "train.encoders.bert4rec.batch_size=32",
    "--set",
    "train.encoders.bert4rec.log_every=5",
    "--set",
    "embed.partitions=2",
    "--set",
    "embed.batch_size=64",
]


def test_pipeline_on_a_standalone_cluster_with_distributed_training(cluster: Cluster, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    run_job(cluster, lake, "generate", *SMALL)
    trained = run_job(cluster, lake, "sequences", *SMALL)
    assert "rows_read" in trained.stdout
    # TorchDistributor in cluster mode: 2 barrier tasks, one on each worker's executor
    training = run_job(cluster, lake, "train", *SMALL, *TRAIN, "--encoder", "bert4rec")
    assert "world_size: 2" in training.stdout and "custembed-bert4rec version 1" in training.stdout
    run_job(cluster, lake, "nightly", *SMALL, *TRAIN, "--sources", "bert4rec", "counts", "--no-report")
    counts = dict(
        query(lake, f"select source, count(*) from embeddings where dt = '{RUN}' and view = 'current' group by source")
    )
    customers = query(lake, f"select count(*) from sequences where dt = '{RUN}' and view = 'current'")[0][0]
    assert counts == {"bert4rec": customers, "counts": customers}
    metrics = query(
        lake, f"select source, product, auc from model_metrics where dt = '{RUN}' and classifier = 'random_forest'"
    )
    assert len(metrics) == 4
    stages = query(lake, f"select job, status from runs where dt = '{RUN}' and job like 'nightly:%'")
    assert sorted(stages) == sorted(
        (f"nightly:{s}", "succeeded") for s in ("sequences", "embed-bert4rec", "embed-counts", "score")
    )


def test_job_survives_a_worker_killed_midway(cluster: Cluster, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    bigger = [
        "--set",
        "generate.customers=20000",
        "--set",
        "generate.partitions=16",
        "--set",
        "score.products=[water_purifier]",
    ]
    run_job(cluster, lake, "generate", *bigger)
    run_job(cluster, lake, "sequences", *bigger)
    expected = query(
        lake,
        f"select view, count(*), sum(full_len), bit_xor(xxhash64(customer_id, text)) from sequences "
        f"where dt = '{RUN}' group by view order by view",
    )
    cmd = [*submit_args(cluster, lake), "sequences", *job_args(lake, *bigger)]
    job = subprocess.Popen(
        cmd, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=lake.parent
    )
    assert job.stdout is not None
    for line in job.stdout:  # kill worker 2 as soon as the job runs tasks
        if "Stage" in line or "sequences: run date" in line:
            time.sleep(3)
            os.kill(cluster.worker_pid(2), signal.SIGKILL)
            break
    rest = job.stdout.read()
    assert job.wait(timeout=900) == 0, rest[-5000:]
    after = query(
        lake,
        f"select view, count(*), sum(full_len), bit_xor(xxhash64(customer_id, text)) from sequences "
        f"where dt = '{RUN}' group by view order by view",
    )
    assert after == expected
    daemon(
        cluster.env,
        "start",
        "org.apache.spark.deploy.worker.Worker",
        2,
        cluster.master_url,
        "--host",
        "127.0.0.1",
        "--cores",
        "1",
        "--memory",
        "3g",
        "--webui-port",
        str(free_port()),
    )


def test_thrift_server_serves_the_lift_table_over_jdbc(cluster: Cluster, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    run_job(cluster, lake, "generate", *SMALL)
    run_job(cluster, lake, "nightly", *SMALL, "--sources", "counts", "--no-report")
    port = free_port()
    env = {
        **os.environ,
        "CUSTEMBED_LAKE": str(lake),
        "THRIFT_PORT": str(port),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "CUSTEMBED_PYTHON": sys.executable,
    }
    server = subprocess.Popen(
        ["bash", str(ROOT / "deploy" / "thrift.sh")],
        env=env,
        cwd=lake.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_port(port, 180)
        beeline = spark_home() / "bin" / "beeline"
        out = subprocess.run(
            [
                "bash",
                str(beeline),
                "-u",
                f"jdbc:hive2://127.0.0.1:{port}/custembed",
                "--silent=true",
                "--outputformat=csv2",
                "-e",
                f"select product, decile, lift from decile_lift where dt = '{RUN}' and source = 'counts' "
                "and classifier = 'random_forest' order by product, decile",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        fields = [line.split(",") for line in out.stdout.strip().splitlines()]
        rows = [f for f in fields if len(f) == 3 and f[1].isdigit()]  # beeline echoes its prompt and a header
        assert len(rows) == 20 and {r[0] for r in rows} == {"water_purifier", "refrigerator"}
        assert [int(r[1]) for r in rows[:10]] == list(range(1, 11))
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
