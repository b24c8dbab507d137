"""``python -m xds_server``: same as the ``xds-server`` command."""

import sys

from .cli import main

sys.exit(main())
