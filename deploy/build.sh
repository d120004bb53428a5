#!/usr/bin/env bash
# Build what a cluster needs from this checkout, under dist/:
#
#   dist/custembed-<version>-py3-none-any.whl   the package, conf/ inside it (custembed/conf/)
#   dist/custembed-conf.zip                     conf/*.yaml, log4j2.properties and deploy/cluster.yaml,
#                                               flat: ship with --archives dist/custembed-conf.zip#conf
#                                               and pass --conf conf/cluster.yaml
#   dist/custembed_pyfiles.zip                  the package for --py-files on clusters without a
#                                               prebuilt environment (pure Python: the executors must
#                                               already have torch, transformers, pandas, pyarrow ...)
#
# Usage: deploy/build.sh            (PYTHON=/path/to/python to choose the interpreter)
#
# The recommended way to ship custembed is a packed Python environment, because
# executors import torch, transformers, pandas, pyarrow, scikit-learn, xgboost and
# lightgbm, which --py-files cannot carry:
#
#   python3.11 -m venv /tmp/custembed-env
#   /tmp/custembed-env/bin/pip install -c constraints.txt "dist/custembed-0.1.0-py3-none-any.whl[train,report]" venv-pack
#   /tmp/custembed-env/bin/venv-pack -p /tmp/custembed-env -o dist/custembed-env.tar.gz
#   CUSTEMBED_ENV_ARCHIVE=dist/custembed-env.tar.gz deploy/submit.sh nightly --run-date 2023-07-31
#
# (submit.sh then adds --archives dist/custembed-env.tar.gz#env and
# spark.pyspark.python=./env/bin/python.) venv-pack does not copy the interpreter:
# every node needs Python 3.11 at the same path as on the build host. conda-pack
# (conda create -p /tmp/custembed-env python=3.11; pip install ...; conda-pack -p
# /tmp/custembed-env -o dist/custembed-env.tar.gz) carries the interpreter too and is
# the safer choice for heterogeneous nodes. Build on the executors' OS and CPU
# architecture. constraints.txt pins the CPU build of torch (torch==2.13.0+cpu, from
# https://download.pytorch.org/whl/cpu); for GPU executors drop that line and install
# torch from the CUDA index first (see deploy/README.md).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
command -v "$PYTHON" >/dev/null 2>&1 || { echo "build.sh: Python not found: $PYTHON (set PYTHON=...)" >&2; exit 1; }

# The installed package looks for conf/ inside itself (custembed.config.CONF_DIRS);
# custembed/conf/ is git-ignored and rebuilt here from conf/ every time.
rm -rf custembed/conf
mkdir -p custembed/conf
cp conf/*.yaml custembed/conf/
cp conf/log4j2.properties custembed/conf/

mkdir -p dist
rm -f dist/custembed-*.whl dist/custembed-conf.zip dist/custembed_pyfiles.zip
rm -rf build
"$PYTHON" -m pip wheel --no-deps -w dist .

"$PYTHON" - <<'PY'
"""Zip conf/ and the package; check that the wheel carries conf/base.yaml."""
import glob
import sys
import zipfile
from pathlib import Path

dist = Path("dist")
wheels = sorted(dist.glob("custembed-*.whl"))
if not wheels:
    sys.exit("build.sh: no wheel in dist/")
wheel = wheels[-1]
names = set(zipfile.ZipFile(wheel).namelist())
missing = [n for n in ("custembed/conf/base.yaml", "custembed/conf/actions.yaml") if n not in names]
if missing:
    sys.exit(f"build.sh: {wheel} lacks {', '.join(missing)} (check package_data in setup.py)")
if "custembed/conf/log4j2.properties" not in names:
    print(f"build.sh: note: {wheel.name} has no custembed/conf/log4j2.properties (setup.py package_data "
          "lists conf/*.yaml only): installed jobs log with Spark's default log4j2 settings", file=sys.stderr)

with zipfile.ZipFile(dist / "custembed-conf.zip", "w", zipfile.ZIP_DEFLATED) as conf_zip:
    for path in sorted(glob.glob("conf/*.yaml")) + ["conf/log4j2.properties", "deploy/cluster.yaml"]:
        conf_zip.write(path, Path(path).name)  # flat: --archives ...#conf gives ./conf/<file>

with zipfile.ZipFile(dist / "custembed_pyfiles.zip", "w", zipfile.ZIP_DEFLATED) as py_zip:
    for path in sorted(Path("custembed").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            py_zip.write(path, path.as_posix())

for path in [wheel, dist / "custembed-conf.zip", dist / "custembed_pyfiles.zip"]:
    print(f"built {path} ({path.stat().st_size / 1024:.0f} KiB)")
print(f"next: pip install -c constraints.txt '{wheel}[train,report]' where the driver runs, ship the same "
      "environment to the executors (see the top of deploy/build.sh), then deploy/submit.sh <job>")
PY
