"""The one queue every source publishes into: ids coalesced (a burst of changes to one tenant is
one entry), debounced (a batch waits `window_s` after its first id, so a burst becomes one run), at
most `max_batch` ids a batch, the oldest first."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

WINDOW_S = 0.2
MAX_BATCH = 1000


@dataclass
class Batch:
    ids: tuple[str, ...]
    sources: set[str] = field(default_factory=set)
    arrived: dict[str, float] = field(default_factory=dict)  # id -> monotonic time its first event arrived
    source_of: dict[str, str] = field(default_factory=dict)  # id -> the source of its first event

    @property
    def source(self) -> str:
        """The report's `source.event`: the sources of the batch's ids, e.g. `pg` or `pg,redis`."""
        return ",".join(sorted(self.sources))


class EventQueue:
    def __init__(self, window_s: float = WINDOW_S, max_batch: int = MAX_BATCH,
                 on_publish: Callable[[str, int], None] | None = None) -> None:
        self.window_s = window_s
        self.max_batch = max_batch
        self._on_publish = on_publish  # (source, ids received): the events metric
        self._pending: dict[str, tuple[float, str]] = {}  # id -> (first arrival, source); insertion = age order
        self._ready = threading.Condition()

    def publish(self, source: str, ids: Iterable[str]) -> int:
        """Add hints (thread-safe); the number of ids not already pending."""
        now = time.monotonic()
        added = received = 0
        with self._ready:
            for tenant_id in ids:
                received += 1
                if tenant_id not in self._pending:
                    self._pending[tenant_id] = (now, source)
                    added += 1
            if added:
                self._ready.notify_all()
        if self._on_publish is not None and received:
            self._on_publish(source, received)
        return added

    def wake(self) -> None:
        """Wake a waiting `next_batch` so that it asks `stopping()` again."""
        with self._ready:
            self._ready.notify_all()

    def requeue(self, batch: Batch) -> None:
        """Put a batch that could not run back, first in line, keeping its arrival times."""
        with self._ready:
            pending = {i: (batch.arrived[i], batch.source_of[i]) for i in batch.ids}
            for tenant_id, entry in self._pending.items():
                pending.setdefault(tenant_id, entry)
            self._pending = pending
            self._ready.notify_all()

    def __len__(self) -> int:
        with self._ready:
            return len(self._pending)

    def next_batch(self, stopping: Callable[[], bool], poll_s: float = 0.2) -> Batch | None:
        """Wait for the first id, then `window_s` more (or until `max_batch` ids are pending); None
        when `stopping()` turns true first (a batch already waiting its window is returned early)."""
        with self._ready:
            while not self._pending:
                if stopping():
                    return None
                self._ready.wait(poll_s)
            first = next(iter(self._pending.values()))[0]
            while len(self._pending) < self.max_batch and not stopping():
                left = first + self.window_s - time.monotonic()
                if left <= 0:
                    break
                self._ready.wait(min(left, poll_s))
            taken = list(self._pending.items())[:self.max_batch]
            for tenant_id, _ in taken:
                del self._pending[tenant_id]
        return Batch(tuple(sorted((i for i, _ in taken), key=str.encode)), {source for _, (_, source) in taken},
                     {i: arrived for i, (arrived, _) in taken}, {i: source for i, (_, source) in taken})
