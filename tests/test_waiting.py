"""xds_server.waiting.wait_until: the one polling loop."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from xds_server import waiting
from xds_server.waiting import WaitTimeout, wait_until


def calls_until(n: int, value: object = "done") -> tuple[Callable[[], object], list[int]]:
    """A probe that returns None for its first n - 1 calls, then ``value``; and its calls."""
    calls: list[int] = []

    def probe() -> object:
        calls.append(len(calls) + 1)
        return value if len(calls) >= n else None

    return probe, calls


def test_returns_the_value_as_soon_as_it_holds() -> None:
    probe, calls = calls_until(1)
    started = time.monotonic()
    assert wait_until(probe, 60, interval=30) == "done"  # no sleep before the first look
    assert time.monotonic() - started < 5
    assert calls == [1]

    probe, calls = calls_until(3, value=[7])
    assert wait_until(probe, 60, interval=0.001) == [7]
    assert calls == [1, 2, 3]  # and not called once more after it held


def test_check_decides_and_the_probe_value_is_returned() -> None:
    values = iter([{"a": 1}, {"a": 0}, {"a": 0, "b": 2}])
    got = wait_until(lambda: next(values), 60, check=lambda d: not any(d.values()), interval=0.001)
    assert got == {"a": 0}


def test_times_out_at_the_deadline_naming_what_and_the_last_value() -> None:
    started = time.monotonic()
    with pytest.raises(WaitTimeout) as info:
        wait_until(lambda: {"warming": 2}, 0.2, check=lambda d: False, interval=30, what="calm")
    took = time.monotonic() - started
    assert 0.2 <= took < 5  # the sleep is cut short at the deadline, not slept through
    assert isinstance(info.value, TimeoutError)
    message = str(info.value)
    assert "calm" in message and "0.2s" in message and "{'warming': 2}" in message
    assert info.value.last == {"warming": 2} and info.value.error is None


def test_looks_once_more_at_the_deadline() -> None:
    probe, calls = calls_until(2)
    assert wait_until(probe, 0.05, interval=30) == "done"
    assert calls == [1, 2]


def test_ignored_exceptions_mean_not_yet_and_end_up_in_the_timeout() -> None:
    attempts: list[int] = []

    def flaky() -> bool:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionRefusedError("refused")
        return True

    assert wait_until(flaky, 60, interval=0.001, ignore=OSError) is True
    assert len(attempts) == 3

    refused = ConnectionRefusedError("nobody home")

    def never() -> bool:
        raise refused

    with pytest.raises(WaitTimeout, match="port 1.*ConnectionRefusedError: nobody home") as info:
        wait_until(never, 0.05, interval=0.01, ignore=(OSError,), what="port 1")
    assert info.value.error is refused and info.value.__cause__ is refused


def test_other_exceptions_propagate_as_they_are_at_once() -> None:
    died = RuntimeError("the process died")
    attempts: list[int] = []

    def dead() -> bool:
        attempts.append(1)
        raise died

    with pytest.raises(RuntimeError) as info:
        wait_until(dead, 60, interval=0.001, ignore=OSError)
    assert info.value is died and not isinstance(info.value, TimeoutError)
    assert len(attempts) == 1

    with pytest.raises(ZeroDivisionError):  # from check too
        wait_until(lambda: 0, 60, check=lambda v: 1 / v, ignore=OSError)


def test_interval_doubles_up_to_max_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(waiting.time, "sleep", slept.append)
    probe, _ = calls_until(6)
    wait_until(probe, 60, interval=0.01, max_interval=0.04)
    assert slept == [0.01, 0.02, 0.04, 0.04, 0.04]
    slept.clear()
    probe, _ = calls_until(4)
    wait_until(probe, 60, interval=0.01)
    assert slept == [0.01, 0.01, 0.01]
