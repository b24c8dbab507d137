"""Istio-style tcp-echo server (stdlib asyncio) used as the v1/v2 backends of the lab."""

from xds_server.echo.server import EchoBindError, EchoServer, format_address, start_echo

__all__ = ["EchoBindError", "EchoServer", "format_address", "start_echo"]
