"""Waiting with a deadline: the one polling loop of the package and its tests.

Whatever is awaited (an Envoy's admin endpoint or ``/ready``, a listener, a proxy's ACK,
a counter) is polled as a real signal until it holds or the time is up; nothing sleeps for
a fixed time hoping it is enough.

    status = wait_until(client.proxy_status, 20, check=all_synced, ignore=ServerUnavailable,
                        what="the proxies in sync")

There is no async twin: every loop that waits in asyncio code waits on an event, not by
polling.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["WaitTimeout", "wait_until"]

T = TypeVar("T")


class WaitTimeout(TimeoutError):
    """What ``wait_until`` raises when the time is up: a TimeoutError that names what was
    awaited and keeps the last value the probe returned (``last``) and, if its last call
    raised one of the ignored exceptions, that exception (``error``, also the cause)."""

    def __init__(
        self, what: str, timeout: float, last: object, error: BaseException | None
    ) -> None:
        self.what = what
        self.timeout = timeout
        self.last = last
        self.error = error
        seen = (
            f"last error: {type(error).__name__}: {error}"
            if error is not None
            else f"last value: {last!r}"
        )
        super().__init__(f"timed out after {timeout:g}s waiting for {what} ({seen})")


def wait_until(
    probe: Callable[[], T],
    timeout: float,
    *,
    check: Callable[[T], object] = bool,
    interval: float = 0.01,
    max_interval: float | None = None,
    what: str = "the condition",
    ignore: type[BaseException] | tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``probe()`` until ``check`` holds for its value (by default: the value is
    truthy) and return that value; raise WaitTimeout once ``timeout`` seconds have passed.

    The probe is called at least once, and once more at the deadline (the last sleep is cut
    short to end there). ``interval``: the pause between calls; with ``max_interval`` it
    doubles after each call up to that. ``ignore``: exceptions that mean "not yet" (e.g. a
    refused connection); any other exception, from ``probe`` or ``check``, propagates as
    it is, which is how a probe says "this will never happen" (the process died).
    """
    deadline = time.monotonic() + timeout
    delay = interval
    last: object = None
    while True:
        error: BaseException | None = None
        try:
            value = probe()
            last = value
            if check(value):
                return value
        except ignore as exc:
            error = exc
        left = deadline - time.monotonic()
        if left <= 0:
            raise WaitTimeout(what, timeout, last, error) from error
        time.sleep(min(delay, left))
        if max_interval is not None:
            delay = min(delay * 2, max_interval)
