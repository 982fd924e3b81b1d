"""``python -m bluecore_sidecar``: the same as the ``bluecore-sidecar`` command."""

import sys

from .cli import main

sys.exit(main())
