"""Deploy files that never run here, checked against what does: the Kubernetes manifest
(deploy/k8s/sparkapplication-nightly.yaml) against the image deploy/Dockerfile builds,
deploy/conf/k8s.conf and the jobs' own parsers; the Airflow DAG
(deploy/airflow/custembed_nightly.py) loaded in a real ``DagBag`` by
deploy/airflow/check_dag.py under a separate Airflow environment
(``CUSTEMBED_AIRFLOW_PYTHON``, built by ``make airflow-venv``), its commands then run
through deploy/submit.sh with ``CUSTEMBED_DRY_RUN=1``.

Everything expected is read from the files themselves (Dockerfile COPY/ENV/mkdir lines,
setup.py's version, constraints.txt's pyspark pin, k8s.conf, the DAG's TRAIN_ENCODERS),
so a rename or a change on one side only fails here.
"""

from __future__ import annotations

import ast
import datetime as dt
import fnmatch
import importlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
MANIFEST = DEPLOY / "k8s" / "sparkapplication-nightly.yaml"
K8S_CONF = DEPLOY / "conf" / "k8s.conf"
GPU_CONF = DEPLOY / "conf" / "gpu-train.conf"
DAG_FILE = DEPLOY / "airflow" / "custembed_nightly.py"
CHECK_DAG = DEPLOY / "airflow" / "check_dag.py"
RUN_DATE = "2023-07-31"


# --------------------------------------------------------------------------- helpers


@dataclass
class Image:
    """What deploy/Dockerfile puts where, as far as its instructions say."""

    files: dict[str, str] = field(default_factory=dict)  # image path -> repository path (COPY of a file)
    copied_dirs: dict[str, str] = field(default_factory=dict)  # image dir -> repository dir (COPY of a dir)
    dirs: set[str] = field(default_factory=set)  # mkdir -p, useradd --home-dir, WORKDIR, ln -s targets
    env: dict[str, str] = field(default_factory=dict)  # ARG defaults and ENV
    base: str = ""
    copy_sources: list[str] = field(default_factory=list)

    def provides(self, path: str) -> bool:
        p = PurePosixPath(path)
        if str(p) in self.files or str(p) in self.dirs:
            return True
        for image_dir, repo_dir in self.copied_dirs.items():
            if PurePosixPath(image_dir) in p.parents:
                rel = p.relative_to(image_dir)
                return repo_dir.rstrip("/") == "dist" or (ROOT / repo_dir / rel).exists()
        return False


def _instructions(text: str) -> Iterator[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        instr, _, rest = (buf + line).partition(" ")
        yield instr.upper(), rest.strip()
        buf = ""


def _expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m.group(1) or m.group(2), m.group(0)), value)


def _run_paths(command: str, env: dict[str, str]) -> Iterator[str]:
    """Directories a RUN line creates: mkdir -p, useradd --home-dir --create-home, ln -s targets."""
    for segment in re.split(r"&&|;|\|\|", command):
        try:
            words = shlex.split(segment)
        except ValueError:  # nested quotes in $(...): the plain words are enough here
            words = segment.split()
        if not words:
            continue
        if words[0] == "mkdir":
            yield from (_expand(w, env) for w in words[1:] if not w.startswith("-"))
        elif words[0] == "useradd" and "--create-home" in words and "--home-dir" in words:
            yield _expand(words[words.index("--home-dir") + 1], env)
        elif words[0] == "ln" and any(w.startswith("-") and "s" in w for w in words[1:]):
            yield _expand(words[-1], env)


def _copy(image: Image, rest: str, workdir: str) -> None:
    words = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
    words = [w for w in words if not w.startswith("--")]
    sources, dest = words[:-1], _expand(words[-1], image.env)
    dest_path = PurePosixPath(workdir) / dest
    image.copy_sources += sources
    for src in sources:
        if src.endswith("/") or (ROOT / src).is_dir():
            image.copied_dirs[str(dest_path)] = src
        elif dest.endswith("/") or len(sources) > 1:
            image.files[str(dest_path / PurePosixPath(src).name)] = src
        else:
            image.files[str(dest_path)] = src


def _set_vars(image: Image, instr: str, rest: str) -> None:
    words = shlex.split(rest)
    if instr == "ENV" and len(words) >= 2 and "=" not in words[0]:  # legacy ENV key value
        words = [f"{words[0]}={' '.join(words[1:])}"]
    for word in words:
        key, sep, value = word.partition("=")
        if sep:
            image.env[key] = _expand(value, image.env)


def parse_dockerfile(path: Path = DOCKERFILE) -> Image:
    image = Image()
    workdir = "/"
    for instr, rest in _instructions(path.read_text()):
        if instr == "FROM":
            image.base = rest.split()[0]
        elif instr in ("ARG", "ENV"):
            _set_vars(image, instr, rest)
        elif instr == "WORKDIR":
            workdir = str(PurePosixPath(workdir) / _expand(rest, image.env))
            image.dirs.add(workdir)
        elif instr == "RUN":
            image.dirs.update(str(PurePosixPath(p)) for p in _run_paths(rest, image.env))
        elif instr in ("COPY", "ADD"):
            _copy(image, rest, workdir)
    return image


def documented_image_tag() -> str:
    """The ``docker build ... -t IMAGE .`` of the Dockerfile's header."""
    found = re.findall(r"^#\s*docker build\b.*?\s-t\s+(\S+)", DOCKERFILE.read_text(), re.MULTILINE)
    assert found, f"{DOCKERFILE.name}: no `docker build ... -t IMAGE` line in its header"
    assert len(set(found)) == 1, f"{DOCKERFILE.name} documents several image names: {found}"
    return found[0]


def setup_version() -> str:
    match = re.search(r"""\bversion\s*=\s*["']([^"']+)["']""", (ROOT / "setup.py").read_text())
    assert match, "setup.py: no version="
    return match.group(1)


def pinned(package: str) -> str:
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        name, sep, version = line.split("#")[0].strip().partition("==")
        if sep and name.strip().lower() == package:
            return version.strip()
    raise AssertionError(f"constraints.txt pins no {package}")


def read_properties(path: Path) -> dict[str, str]:
    """A Spark properties file (``key value`` or ``key=value``, # comments), as spark-submit reads it."""
    props: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", "!")):
            continue
        match = re.fullmatch(r"([^\s=:]+)\s*(?:[=:\s]\s*)?(.*)", line)
        assert match, f"{path.name}: cannot read {line!r}"
        props[match.group(1)] = match.group(2).strip()
    return props


def render_manifest(run_date: str = RUN_DATE) -> str:
    """``RUN_DATE=... envsubst '${RUN_DATE}'``: both spellings of that one variable, nothing else."""
    return re.sub(r"\$\{RUN_DATE\}|\$RUN_DATE\b", run_date, MANIFEST.read_text())


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)
    elif isinstance(node, str):
        yield node


def spark_value(value: Any) -> str:
    """A YAML scalar as Spark reads it from a properties file (booleans lower case)."""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value).strip()


def parse_job(job: str, args: list[str]) -> Any:
    """``custembed <job> args`` through the job's own parser: the options it really accepts."""
    from custembed.cli import JOBS
    from custembed.jobs.common import base_parser

    assert job in JOBS, f"{job!r} is not a custembed job ({', '.join(JOBS)})"
    module = importlib.import_module(f"custembed.jobs.{JOBS[job]}")
    parser = base_parser(job)
    if getattr(module, "add_arguments", None):
        module.add_arguments(parser)
    try:
        return parser.parse_args(args)
    except SystemExit as e:
        pytest.fail(f"custembed {job} rejects its arguments {args} (exit {e.code}; see stderr)")


def check_job_config(conf_file: Path | None, sets: list[str]) -> Any:
    from custembed.config import load_config

    return load_config(str(conf_file) if conf_file else None, sets)


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    doc = yaml.safe_load(render_manifest())
    assert isinstance(doc, dict), f"{MANIFEST}: not one YAML mapping"
    return doc


@pytest.fixture(scope="module")
def image() -> Image:
    return parse_dockerfile()


# --------------------------------------------------------------------------- Kubernetes manifest


def test_manifest_renders_like_envsubst_and_parses(manifest: dict[str, Any]) -> None:
    rendered = render_manifest()
    if shutil.which("envsubst"):
        real = subprocess.run(
            ["envsubst", "${RUN_DATE}"],
            input=MANIFEST.read_text(),
            text=True,
            capture_output=True,
            check=True,
            env={**os.environ, "RUN_DATE": RUN_DATE},
        ).stdout
        assert real == rendered
    left = [s for s in strings(manifest) if "$" in s]
    assert not left, f"variables envsubst '${{RUN_DATE}}' leaves as they are: {left}"
    assert manifest["apiVersion"] == "sparkoperator.k8s.io/v1beta2"
    assert manifest["kind"] == "SparkApplication"
    spec = manifest["spec"]
    assert spec["type"] == "Python" and spec["mode"] == "cluster"
    name = manifest["metadata"]["name"]
    assert RUN_DATE in name, "one SparkApplication per run date: the date belongs in its name"
    # the operator derives pod and service names from it: DNS-1123 label, 63 characters at most
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 63, name


def test_manifest_paths_are_in_the_image(manifest: dict[str, Any], image: Image) -> None:
    app = manifest["spec"]["mainApplicationFile"]
    assert app.startswith("local://"), f"mainApplicationFile {app}: the image carries it, so local://"
    app_path = app.removeprefix("local://")
    assert app_path in image.files, f"{app_path} is not a file deploy/Dockerfile copies ({sorted(image.files)})"
    assert image.files[app_path] == "deploy/run_job.py"
    assert (ROOT / image.files[app_path]).is_file()

    named: dict[str, set[str]] = {}
    for path, text in [
        (MANIFEST, render_manifest()),
        (K8S_CONF, K8S_CONF.read_text()),
        (GPU_CONF, GPU_CONF.read_text()),
    ]:
        doc = yaml.safe_load(text) if path.suffix == ".yaml" else read_properties(path)
        for s in strings(doc):
            for found in re.findall(r"(?:local://)?(/opt/[^\s,:;\"']+)", s):
                named.setdefault(found, set()).add(path.name)
    assert app_path in named
    missing = {p: sorted(where) for p, where in named.items() if not image.provides(p)}
    assert not missing, f"paths the image does not have (deploy/Dockerfile COPY/mkdir): {missing}"
    for p in named:
        if p in image.files:
            source = image.files[p]
            assert source.startswith("dist/") or (ROOT / source).is_file(), f"{p} comes from {source}, missing"


def _ignored(path: str, patterns: list[str]) -> bool:
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.removeprefix("!").strip("/")
        if fnmatch.fnmatchcase(path, pat) or fnmatch.fnmatchcase(path, pat + "/*"):
            ignored = not negate
    return ignored


def test_dockerfile_copies_only_what_the_build_context_has(image: Image) -> None:
    """BuildKit reads Dockerfile.dockerignore: a COPY source it drops fails the build."""
    patterns = [
        ln.strip()
        for ln in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if ln.strip() and not ln.strip().startswith("#")
    ]
    assert image.copy_sources
    for src in image.copy_sources:
        if src.rstrip("/") == "dist":
            # built by deploy/build.sh: pip wheel -w dist
            assert re.search(r"pip wheel\b.*-w dist\b", (DEPLOY / "build.sh").read_text())
            assert any(p.startswith("!dist/") for p in patterns), "the dockerignore drops every wheel"
            continue
        assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
        assert not _ignored(src.rstrip("/"), patterns), f"COPY {src}: Dockerfile.dockerignore keeps it out"


def test_manifest_image_is_the_documented_build(manifest: dict[str, Any], image: Image) -> None:
    spec = manifest["spec"]
    documented = documented_image_tag()
    assert spec["image"] == documented, f"image {spec['image']}; deploy/Dockerfile builds {documented}"
    assert documented.rsplit(":", 1)[1] == setup_version(), "the image tag is the package version (setup.py)"
    assert read_properties(K8S_CONF)["spark.kubernetes.container.image"] == spec["image"]
    # the image's Spark is the pip pyspark, installed under constraints.txt
    assert str(spec["sparkVersion"]) == pinned("pyspark"), "sparkVersion is the image's pyspark (constraints.txt)"
    assert image.env["SPARK_HOME"].endswith("/site-packages/pyspark")
    python = re.fullmatch(r"python:(\d+)\.(\d+)\S*", image.base)
    assert python, f"FROM {image.base}: not a python image"
    assert str(spec["pythonVersion"]) == python.group(1)
    assert image.env["SPARK_HOME"].startswith(f"/usr/local/lib/python{python.group(1)}.{python.group(2)}/")
    # the interpreter Spark starts is the image's, the one custembed is installed into
    conf = spec["sparkConf"]
    for key, var in [
        ("spark.pyspark.python", "PYSPARK_PYTHON"),
        ("spark.pyspark.driver.python", "PYSPARK_DRIVER_PYTHON"),
    ]:
        assert conf[key] == image.env[var], f"{key}={conf[key]}, the image's {var}={image.env[var]}"


def test_manifest_runs_a_real_job_with_accepted_options(manifest: dict[str, Any], image: Image) -> None:
    from custembed.config import parse_date

    args = [str(a) for a in manifest["spec"]["arguments"]]
    job, options = args[0], args[1:]
    assert job == "nightly", "deploy/k8s/sparkapplication-nightly.yaml runs the nightly job"
    parsed = parse_job(job, options)
    assert parsed.run_date == RUN_DATE, "--run-date comes from the rendered ${RUN_DATE}"
    parse_date(parsed.run_date, "--run-date")
    assert parsed.conf, "a cluster run needs --conf (deploy/cluster.yaml in the image)"
    assert parsed.conf in image.files, f"--conf {parsed.conf}: not a file the image has"
    source = ROOT / image.files[parsed.conf]
    cfg = check_job_config(source, parsed.set)  # unknown keys, wrong types: UserError
    assert cfg.spark.master is None, "spark-submit / the operator picks the master"
    # the lake volume is mounted where the job's config puts the lake, on driver and executors
    conf = manifest["spec"]["sparkConf"]
    mount = re.compile(r"spark\.kubernetes\.(driver|executor)\.volumes\.[^.]+\.[^.]+\.mount\.path")
    mounts = {k: v for k, v in conf.items() if mount.fullmatch(k)}
    for role in ("driver", "executor"):
        assert cfg.project.lake_dir in [v for k, v in mounts.items() if f".{role}." in k], (role, mounts)


# k8s.conf key -> where the SparkApplication says the same thing outside sparkConf
SPEC_FIELDS: dict[str, tuple[str, ...]] = {
    "spark.kubernetes.namespace": ("metadata", "namespace"),
    "spark.kubernetes.container.image": ("spec", "image"),
    "spark.kubernetes.container.image.pullPolicy": ("spec", "imagePullPolicy"),
    "spark.kubernetes.authenticate.driver.serviceAccountName": ("spec", "driver", "serviceAccount"),
    "spark.driver.cores": ("spec", "driver", "cores"),
    "spark.driver.memory": ("spec", "driver", "memory"),
    "spark.executor.instances": ("spec", "executor", "instances"),
    "spark.executor.cores": ("spec", "executor", "cores"),
    "spark.executor.memory": ("spec", "executor", "memory"),
    "spark.kubernetes.executor.request.cores": ("spec", "executor", "coreRequest"),
    "spark.dynamicAllocation.enabled": ("spec", "dynamicAllocation", "enabled"),
}
# k8s.conf keys that only concern spark-submit against the API server, not the operator
SUBMIT_ONLY = {"spark.master", "spark.kubernetes.file.upload.path"}


def _field(doc: dict[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = doc
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def test_manifest_spark_settings_agree_with_k8s_conf(manifest: dict[str, Any]) -> None:
    props = read_properties(K8S_CONF)
    conf = {k: spark_value(v) for k, v in manifest["spec"]["sparkConf"].items()}
    differ = {k: (props[k], conf[k]) for k in props.keys() & conf.keys() if props[k] != conf[k]}
    assert not differ, f"k8s.conf and the manifest's sparkConf disagree (k8s.conf, manifest): {differ}"
    for key, path in SPEC_FIELDS.items():
        value = _field(manifest, path)
        if key in props and value is not None:
            assert props[key] == spark_value(value), f"{key}={props[key]} in k8s.conf, {'.'.join(path)}={value}"
    unset = sorted(
        k
        for k in props
        if k not in conf and k not in SUBMIT_ONLY and _field(manifest, SPEC_FIELDS.get(k, ("-",))) is None
    )
    assert not unset, f"k8s.conf sets what the manifest does not (its header promises the same settings): {unset}"


# --------------------------------------------------------------------------- Airflow DAG


def _dag_constants() -> dict[str, Any]:
    """TRAIN_ENCODERS, TRAIN_WEEKDAY, ... as the DAG file assigns them (literal values only)."""
    values: dict[str, Any] = {}
    for node in ast.parse(DAG_FILE.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                values[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue
    return values


# nine consecutive 02:00 UTC starts: every weekday at least once
RUN_AFTERS = [f"2023-07-{day:02d}T02:00:00+00:00" for day in range(24, 32)] + ["2023-08-01T02:00:00+00:00"]


@pytest.fixture(scope="module")
def dag_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    python = os.environ.get("CUSTEMBED_AIRFLOW_PYTHON")
    if not python:
        pytest.skip(
            "CUSTEMBED_AIRFLOW_PYTHON is not set: `make airflow-venv`, then "
            "CUSTEMBED_AIRFLOW_PYTHON=$PWD/.venv-airflow/bin/python (CI sets it)"
        )
    assert os.access(python, os.X_OK), f"CUSTEMBED_AIRFLOW_PYTHON={python} is not an executable"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "AIRFLOW"))}
    env.update(CUSTEMBED_HOME=str(ROOT), AIRFLOW_HOME=str(tmp_path_factory.mktemp("airflow-home")))
    cmd = [python, str(CHECK_DAG), str(DAG_FILE.parent)] + [a for r in RUN_AFTERS for a in ("--run-after", r)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    lines = proc.stdout.strip().splitlines()
    assert lines, f"check_dag.py printed nothing (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
    report: dict[str, Any] = json.loads(lines[-1])
    assert not report["import_errors"], f"DAG import errors: {report['import_errors']}"
    assert proc.returncode == 0, proc.stderr[-4000:]
    return report


def test_dag_loads_without_errors_or_deprecations(dag_report: dict[str, Any]) -> None:
    assert dag_report["import_errors"] == {}
    assert list(dag_report["dags"]) == ["custembed_nightly"], "deploy/airflow holds one DAG (check_dag.py ignored)"
    assert not dag_report["dag_warnings"], f"the DAG uses deprecated Airflow API: {dag_report['dag_warnings']}"
    dag = dag_report["dags"]["custembed_nightly"]
    assert Path(dag["fileloc"]).resolve() == DAG_FILE.resolve()


def test_dag_task_graph(dag_report: dict[str, Any]) -> None:
    """The DAG's docstring: one train task per encoder of TRAIN_ENCODERS, one after the other,
    then the nightly task, which runs even when a training failed (the old champion stays)."""
    from custembed.config import load_config

    constants = _dag_constants()
    encoders = constants["TRAIN_ENCODERS"]
    known = load_config(str(DEPLOY / "cluster.yaml")).train.encoders
    assert set(encoders) <= set(known), f"TRAIN_ENCODERS {encoders}: not all under train.encoders {sorted(known)}"
    dag = dag_report["dags"]["custembed_nightly"]
    tasks = dag["tasks"]
    trains = [f"train_{e}" for e in encoders]
    assert set(tasks) == {"nightly", *trains}
    chain = [*trains, "nightly"]
    for before, after in zip(chain, chain[1:], strict=False):
        assert tasks[before]["downstream"] == [after], f"{before} -> {tasks[before]['downstream']}, not [{after}]"
        assert tasks[after]["upstream"] == [before], f"{tasks[after]['upstream']} -> {after}, not [{before}]"
    assert tasks[chain[0]]["upstream"] == [] and tasks["nightly"]["downstream"] == []
    for task_id in chain[1:]:
        # a failed or skipped training does not stop what follows
        assert tasks[task_id]["trigger_rule"] == "all_done", (task_id, tasks[task_id]["trigger_rule"])
    for task_id in chain:
        assert tasks[task_id]["operator"].endswith(".BashOperator")
    # one date at a time on one lake; retries resume (deploy/README.md, section 4)
    assert dag["max_active_runs"] == 1 and dag["catchup"] is False
    assert tasks["nightly"]["retries"] >= 1


def test_dag_runs_for_the_day_that_just_ended(dag_report: dict[str, Any]) -> None:
    for run_after, run in dag_report["dags"]["custembed_nightly"]["runs"].items():
        started = dt.datetime.fromisoformat(run_after)
        assert run["ds"] == (started - dt.timedelta(days=1)).date().isoformat(), (run_after, run)


def _submitted(stderr: str) -> list[str]:
    """The spark-submit command submit.sh printed (``+ cmd`` with %q quoting)."""
    lines = [ln for ln in stderr.splitlines() if ln.startswith("+ ")]
    assert len(lines) == 1, f"expected one submitted command, got:\n{stderr}"
    return shlex.split(lines[0][2:])


def _job_of(command: list[str]) -> tuple[str, list[str]]:
    apps = [i for i, w in enumerate(command) if w.endswith("/run_job.py")]
    assert len(apps) == 1, command
    return command[apps[0] + 1], command[apps[0] + 2 :]


def _conf_flags(command: list[str]) -> dict[str, str]:
    apps = next(i for i, w in enumerate(command) if w.endswith("/run_job.py"))
    flags = [command[i + 1] for i in range(apps) if command[i] == "--conf"]
    return dict(f.split("=", 1) for f in flags)


def test_dag_commands_submit_real_jobs(dag_report: dict[str, Any], tmp_path: Path) -> None:
    """Each task's rendered command, run as the worker would (submit.sh with CUSTEMBED_DRY_RUN=1)."""
    from custembed.config import parse_date

    constants = _dag_constants()
    weekday = constants["TRAIN_WEEKDAY"]
    dag = dag_report["dags"]["custembed_nightly"]
    runs = dag["runs"]
    by_kind = {}
    for run_after, run in runs.items():
        by_kind.setdefault(dt.date.fromisoformat(run["ds"]).isoweekday() == weekday, run_after)
    assert set(by_kind) == {True, False}, f"the runs checked cover no training day or no other day: {runs}"
    gpu_props = read_properties(GPU_CONF)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CUSTEMBED_", "MLFLOW_", "SPARK_MASTER"))}
    env.update(
        CUSTEMBED_DRY_RUN="1",
        CUSTEMBED_CLUSTER="k8s",
        CUSTEMBED_PYTHON=sys.executable,
        CUSTEMBED_TRAIN_PROPS=str(GPU_CONF),
        HOME=str(tmp_path),
    )
    for training_day, run_after in sorted(by_kind.items()):
        ds = runs[run_after]["ds"]
        for task_id, task in sorted(dag["tasks"].items()):
            command = task["rendered"][run_after]
            proc = subprocess.run(
                ["bash", "-c", command], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path
            )
            where = f"{task_id} for ds={ds}: {command}\n{proc.stdout}{proc.stderr}"
            if task_id.startswith("train_") and not training_day:
                assert proc.returncode in task.get("skip_on_exit_code", []), f"not skipped: {where}"
                assert "+ " not in proc.stderr, f"submitted on a day without training: {where}"
                continue
            assert proc.returncode == 0, where
            submitted = _submitted(proc.stderr)
            job, args = _job_of(submitted)
            parsed = parse_job(job, args)
            parse_date(parsed.run_date, "--run-date")
            check_job_config(Path(parsed.conf) if parsed.conf else None, parsed.set)
            flags = _conf_flags(submitted)
            if task_id == "nightly":
                assert job == "nightly" and parsed.run_date == ds, where
                assert not gpu_props.keys() & flags.keys(), f"the GPU overlay leaked into nightly: {where}"
            else:
                encoder = task_id.removeprefix("train_")
                day_before = (dt.date.fromisoformat(ds) - dt.timedelta(days=1)).isoformat()
                assert (job, parsed.encoder, parsed.run_date) == ("train", encoder, day_before), where
                assert {k: flags.get(k) for k in gpu_props} == gpu_props, f"no GPU overlay: {where}"
