"""``python -m abflow.job``: run one job of a night (see abflow.job.command).

The workflow runs this file directly (``python .../abflow/job/__main__.py``): the same program,
without runpy's imports. Run so, its own directory heads ``sys.path``; it is taken off, so that
the modules beside it are found only as ``abflow.job.*``.
"""

import os
import sys

if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

from abflow.job.main import main

sys.exit(main())
