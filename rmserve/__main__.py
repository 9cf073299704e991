"""``python -m rmserve`` is the ``rmserve`` command."""

import sys

from rmserve.cli import main

sys.exit(main())
