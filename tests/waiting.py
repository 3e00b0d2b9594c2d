"""Waiting for something another thread or process does, without timing assertions."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

#: Generous on purpose: things normally take milliseconds; a slow shared machine must not fail.
WAIT_S = 20.0


def wait_for(condition: Callable[[], bool], what: str = "the condition", timeout: float = WAIT_S) -> None:
    """Return once ``condition()`` is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout} s waiting for {what}")
        time.sleep(0.005)
