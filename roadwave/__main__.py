"""``python -m roadwave`` is the ``roadwave`` command."""

import sys

from roadwave.cli import main

sys.exit(main())
