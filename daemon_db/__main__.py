"""``python -m daemon_db``: the same as the ``daemon-db`` command."""

import sys

from ._cli import main

sys.exit(main())
