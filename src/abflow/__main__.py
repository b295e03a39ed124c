"""``python -m abflow``: the abflow command (abflow.cli), where no ``abflow`` script is on the
path."""

import sys

from abflow.cli import main

sys.exit(main())
