"""``python -m custembed <job>``."""

import sys

from custembed.cli import main

sys.exit(main())
