"""Port helpers for tests and the lab: ports come from the kernel, never from a fixed list."""

from __future__ import annotations

import socket

__all__ = ["free_port", "port_is_free"]


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel considers free right now (bind to 0, read it, release it).

    Racy by nature: prefer letting the server bind port 0 itself and report the port, and use
    this only where a port must be written into a config before the server starts.
    """
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could bind ``host:port`` now.

    SO_REUSEADDR is set like asyncio and Envoy do, so connections lingering in TIME_WAIT do not
    count as "in use"; only a socket really bound to the port does.
    """
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True
