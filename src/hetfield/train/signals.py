"""Signals during training: SIGINT/SIGTERM become a flag that every phase checks.

Every phase (training steps, the EM class start, validation, the latent pass) checks the flag at
least once per batch or EM iteration and raises :class:`StopRequested`; the trainer then saves the
newest resumable state and raises :class:`~hetfield.errors.Interrupted` (exit 128 + signal).
"""

from __future__ import annotations

import contextlib
import signal
from typing import Callable


class StopRequested(Exception):
    """Raised by the phase checks when a signal has arrived (caught by the trainer)."""


@contextlib.contextmanager
def signals_to_flag(flag: dict):
    """Turn SIGINT/SIGTERM into a flag that the phases check (main thread only)."""

    def handler(signum, frame):
        flag.setdefault("signum", signum)

    previous = {}
    try:
        for s in (signal.SIGINT, signal.SIGTERM):
            previous[s] = signal.signal(s, handler)
    except ValueError:  # not the main thread: no handlers, no clean-interrupt support
        previous = {}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def stop_check(flag: dict) -> Callable[[], None]:
    """``check()`` for the phases: raises :class:`StopRequested` once a signal has set ``flag``."""

    def check() -> None:
        if flag.get("signum"):
            raise StopRequested()

    return check


def checked(items, check: Callable[[], None] | None):
    """``items``, calling ``check()`` (which raises to stop) before each one and after the last."""
    for item in items:
        if check is not None:
            check()
        yield item
    if check is not None:
        check()


def before_training(work: Callable[[], object], flag: dict, log) -> None:
    """Run a start-up step of a new run (it calls the trainer's check); a stop there leaves nothing
    to resume, and says so."""
    from hetfield.errors import Interrupted

    try:
        work()
    except StopRequested:
        name = signal_name(flag["signum"])
        log(f"stopped by {name} before training started; nothing saved", echo=False)
        raise Interrupted(f"stopped by {name} before training started (nothing to resume); start it again with the same command or --load latest", flag["signum"]) from None
