"""Helpers shared by tests that run the daemon as a real process."""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time


class ServerProcess:
    """``xds-server serve ...`` as a subprocess, its output lines readable with a deadline."""

    def __init__(self, *args: str) -> None:
        cmd = [sys.executable, "-m", "xds_server", "serve", *args]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._queue.put(line)

    def wait_line(self, needle: str, timeout: float = 10.0) -> str:
        """Read output until a line contains ``needle`` (the daemon's own readiness signal)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            self.lines.append(line)
            if needle in line:
                return line
        raise AssertionError(f"no line with {needle!r}; output so far:\n{''.join(self.lines)}")

    def wait_port(self, what: str) -> int:
        """The port from the daemon's ``<what> listening on HOST:PORT`` line."""
        return int(self.wait_line(f"{what} listening on").rsplit(":", 1)[1])

    def kill(self) -> None:
        """kill -9: no chance to clean up."""
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        return self.proc.returncode
