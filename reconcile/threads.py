"""A helper thread that hands its result, or its exception, back to the thread that waits for it,
and is never waited for without a bound."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Worker(Generic[T]):
    """`Worker(fn).start()` runs `fn()` in a daemon thread; `result()` returns its value or raises its
    exception in the caller's thread. `on_error`, if given, runs in the worker as soon as `fn` fails
    (to stop whatever else is waiting on the same work)."""

    def __init__(self, fn: Callable[[], T], name: str, on_error: Callable[[BaseException], None] | None = None) -> None:
        self._fn = fn
        self._on_error = on_error
        self._value: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._target, name=name, daemon=True)

    def _target(self) -> None:
        try:
            self._value = self._fn()
        except BaseException as exc:  # handed to the waiting thread by result()
            self._error = exc
            if self._on_error is not None:
                self._on_error(exc)

    def start(self) -> Worker[T]:
        self._thread.start()
        return self

    def join(self, timeout: float | None) -> bool:
        """Wait up to `timeout` seconds (None: until done); True when the work has ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def value(self) -> T | None:
        """The result so far, without raising (None until it succeeded)."""
        return self._value

    def result(self) -> T:
        """The value of `fn()`, or its exception raised here. The work must have ended."""
        assert not self._thread.is_alive(), "result() before the work ended"
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]
