"""``python -m abflow.job``: run one job of a night (see abflow.job.command).

The workflow runs this file directly (``python -S .../abflow/job/__main__.py``): the same
program, without runpy's imports and the site module. Run so, its own directory heads
``sys.path``: it is replaced by the directory abflow lies in, so that the modules beside it are
found only as ``abflow.job.*`` and the job runs the abflow it belongs to (with ``-S`` no
site-packages are on the path; a job needs none).
"""

import os
import sys

if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from abflow.job.main import main

sys.exit(main())
