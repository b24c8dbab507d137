"""``xds-server serve`` as a child process: for the demo, and for tests that kill it."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import AnyStr


def terminate(proc: subprocess.Popen[AnyStr], timeout: float = 10.0) -> int:
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


class LineProcess:
    """A child process whose output lines (stdout and stderr) can be awaited with a
    deadline: the readiness signal of every lab command, e.g. ``xds-server echo``'s
    ``ready`` line. ``session=True`` gives it a process group of its own, so that
    ``interrupt()`` is a terminal's Ctrl-C (SIGINT to the group) and reaches what a
    shell started too."""

    what = "the process"

    def __init__(
        self,
        cmd: Sequence[str] | str,
        *,
        shell: bool = False,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        session: bool = False,
    ) -> None:
        self.proc = subprocess.Popen(
            cmd,
            shell=shell,
            cwd=cwd,
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=session,
        )
        self.session = session
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
            f"{self.what} printed no line with {needle!r}"
            + (f" and exited with {self.proc.returncode}" if self.proc.poll() is not None else "")
            + f"; its output:\n{''.join(self.lines)}"
        )

    def output(self) -> str:
        """Every line read so far, awaited or not."""
        while True:
            try:
                self.lines.append(self._queue.get_nowait())
            except queue.Empty:
                return "".join(self.lines)

    def interrupt(self, timeout: float = 10.0) -> int:
        """Ctrl-C (SIGINT; to the whole group with ``session``) and wait; SIGKILL after
        ``timeout``. Returns the exit code."""
        if self.proc.poll() is None:
            if self.session:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGINT)
            else:
                self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                if self.session:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


class ServerProcess(LineProcess):
    """The daemon as a subprocess; its output lines can be awaited with a deadline, which is
    how callers learn its ports and see it reload."""

    what = "xds-server"

    def __init__(self, *args: str) -> None:
        super().__init__([sys.executable, "-m", "xds_server", "serve", *args])

    def wait_port(self, what: str) -> int:
        """The port from the daemon's ``<what> listening on HOST:PORT`` line."""
        return int(self.wait_line(f"{what} listening on").rsplit(":", 1)[1])

    def kill(self) -> None:
        """kill -9: no chance to clean up."""
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> int:
        return terminate(self.proc)
