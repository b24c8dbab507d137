"""``python -m xds_server.echo``: run the tcp-echo server from the command line."""

import sys

from xds_server.echo.server import main

sys.exit(main(prog="python -m xds_server.echo"))
