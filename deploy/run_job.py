"""The driver script spark-submit runs: ``spark-submit deploy/run_job.py <job> [job args]``.

It runs ``custembed <job> [job args]`` (``custembed.cli.main``) and exits with its
code, so spark-submit, YARN, Kubernetes and Airflow all see the job's own status
(0 done, 2 a configuration or input mistake reported in one line, 1 a failure).
No logic lives here; see ``deploy/submit.sh`` for the launcher.
"""

from __future__ import annotations

import sys
from pathlib import Path


def _prefer_checkout() -> None:
    """Import the package from the checkout this script sits in, when there is one.

    ``custembed.config`` finds ``conf/base.yaml`` next to the package on the file
    system. A ``--py-files`` zip comes first on the driver's ``sys.path`` but its
    ``conf/`` cannot be read from inside the zip, so in client mode from a checkout
    the driver imports the checkout (``conf/`` beside it); executors still use the
    zip or their packed environment. Without a checkout (cluster deploy mode, the
    container image) the installed package is used, with the ``conf/`` its wheel ships.
    """
    root = Path(__file__).resolve().parent.parent
    if (root / "custembed" / "config.py").is_file() and (root / "conf" / "base.yaml").is_file():
        sys.path.insert(0, str(root))


if __name__ == "__main__":
    _prefer_checkout()
    from custembed.cli import main

    sys.exit(main(sys.argv[1:]))
