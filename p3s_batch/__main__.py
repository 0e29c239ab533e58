"""``python -m p3s_batch``: the p3s-batch command."""

import sys

from p3s_batch.cli import main

sys.exit(main())
