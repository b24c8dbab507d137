"""``xds-server serve`` as a child process: for the demo, and for tests that kill it."""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time


def terminate(proc: subprocess.Popen, timeout: float = 10.0) -> int:
    """SIGTERM, and SIGKILL if it is still there after ``timeout``: every child we start
    goes this way, so none outlives a test or the demo."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class ServerProcess:
    """The daemon as a subprocess; its output lines can be awaited with a deadline, which is
    how callers learn its ports and see it reload."""

    def __init__(self, *args: str) -> None:
        cmd = [sys.executable, "-m", "xds_server", "serve", *args]
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line)

    def wait_line(self, needle: str, timeout: float = 10.0) -> str:
        """Read output until a line contains ``needle``."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            self.lines.append(line)
            if needle in line:
                return line
            if self.proc.poll() is not None and self._queue.empty():
                break
        raise RuntimeError(
            f"xds-server printed no line with {needle!r}"
            + (f" and exited with {self.proc.returncode}" if self.proc.poll() is not None else "")
            + f"; its output:\n{''.join(self.lines)}"
        )

    def wait_port(self, what: str) -> int:
        """The port from the daemon's ``<what> listening on HOST:PORT`` line."""
        return int(self.wait_line(f"{what} listening on").rsplit(":", 1)[1])

    def kill(self) -> None:
        """kill -9: no chance to clean up."""
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> int:
        return terminate(self.proc)
