"""``python -m daemon_db``: the same as the ``daemon-db`` command."""

import sys

from .cli import main

sys.exit(main())
