"""``python -m abflow.job ARGUMENTS``: run one job of a night by hand (see abflow.job.command)."""

import sys

from abflow.job.main import main

sys.exit(main())
