"""A TCP proxy on 127.0.0.1 in front of a real PostgreSQL, told by a test how to misbehave.

Plain sockets and threads. Each accepted connection gets its own connection to the upstream server
(TCP, or the Unix socket of an embedded server) and two pump threads, one per direction. A `Rule`
says what to do to which connection and when:

- `stall`: stop forwarding both ways, keep both sockets open until the proxy is closed (a peer gone
  quiet: HAProxy or a network path that stops passing packets). By default the proxy then stalls
  every connection accepted afterwards too, so a cancel request sent on a new connection gets
  nowhere either, as through a real stalled path.
- `drop`: close both sides (FIN), as a proxy does when it gives up on a session.
- `reset`: close both sides with SO_LINGER 0, so each peer gets a RST.
- `hold`: stop forwarding in the direction where the rule fired until `Rule.release()` is called
  (the test does something meanwhile, e.g. restart the server), then carry on.
- `notify`: only record that the point was reached (`Rule.fired`), changing nothing.

When: `after` bytes in `direction` ("c2s" client to server, "s2c" server to client), counted from
the start of the connection, or, with `markers`, from the start of the last of these byte patterns
seen in order in the client-to-server stream (the SQL text of simple-protocol queries is on the
wire in clear when the client uses `sslmode=disable`). The rule fires when the next byte in
`direction` would go past `after`: `after=0, direction="c2s"` at a marker means the statement never
reaches the server; `after=0, direction="s2c"` means the server runs it but its answer never comes
back. `connection` restricts a rule to the Nth connection the proxy accepts (1-based).

`refuse()` closes the listening socket: new connections are refused by the kernel.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

ACTIONS = ("stall", "drop", "reset", "hold", "notify")
DIRECTIONS = ("c2s", "s2c")
_POLL_S = 0.05
_CHUNK = 65536


@dataclass(frozen=True)
class Upstream:
    """Where the proxy connects: a TCP host and port, or a Unix socket path."""

    host: str | None = None
    port: int = 5432
    unix_path: str | None = None

    def connect(self) -> socket.socket:
        if self.unix_path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(5)
            sock.connect(self.unix_path)
            return sock
        assert self.host is not None
        sock = socket.create_connection((self.host, self.port), timeout=5)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


@dataclass(eq=False)
class Rule:
    action: str
    after: int = 0
    markers: tuple[bytes, ...] = ()
    direction: str = "c2s"
    connection: int | None = None
    stall_new: bool = True  # stall: every connection accepted afterwards is stalled from its start
    fired: threading.Event = field(default_factory=threading.Event)
    fired_on: list[int] = field(default_factory=list)  # indexes of the connections it fired on
    _released: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown action {self.action!r}")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"unknown direction {self.direction!r}")
        if isinstance(self.markers, bytes):
            self.markers = (self.markers,)

    def release(self) -> None:
        """Let a `hold` go on."""
        self._released.set()

    def wait(self, timeout: float) -> bool:
        return self.fired.wait(timeout)


@dataclass
class _Track:
    """One rule on one connection: which marker comes next, where it armed, whether it fired."""

    stage: int = 0
    search_from: int = 0  # absolute c2s offset where the next marker may start
    armed_at: dict[str, int] | None = None  # absolute offset per direction where counting starts
    done: bool = False


class _Conn:
    def __init__(self, index: int, client: socket.socket, upstream: socket.socket | None,
                 rules: list[Rule]) -> None:
        self.index = index
        self.client = client
        self.upstream = upstream
        self.lock = threading.Lock()
        self.closed = threading.Event()
        self.stalled = False
        self.offset = {"c2s": 0, "s2c": 0}
        self.tail = b""  # last bytes of the c2s stream, for markers split across reads
        self.tracks = {id(rule): _Track(armed_at=None if rule.markers else {"c2s": 0, "s2c": 0})
                       for rule in rules if rule.connection in (None, index)}
        self.rules = [rule for rule in rules if id(rule) in self.tracks]
        self.threads: list[threading.Thread] = []

    def sockets(self) -> list[socket.socket]:
        return [s for s in (self.client, self.upstream) if s is not None]

    def close(self, reset: bool = False) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for sock in self.sockets():
            with contextlib.suppress(OSError):
                if reset:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                else:
                    sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()


class FaultProxy:
    """`FaultProxy(upstream)` listens on 127.0.0.1 (`port`) until `close()`."""

    def __init__(self, upstream: Upstream, name: str = "proxy") -> None:
        self.upstream = upstream
        self.name = name
        self.rules: list[Rule] = []
        self.accepted = 0
        self._conns: list[_Conn] = []
        self._held: list[socket.socket] = []  # connections stalled from their start
        self._stall_new = False
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self._listener.settimeout(_POLL_S)
        self.port: int = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"{name}-accept", daemon=True)
        self._acceptor.start()

    # -- control ------------------------------------------------------------------------------------
    def add(self, action: str, *, after: int = 0, marker: bytes | tuple[bytes, ...] = (), direction: str = "c2s",
            connection: int | None = None, stall_new: bool = True) -> Rule:
        """A rule for connections accepted from now on (see the module doc)."""
        markers = (marker,) if isinstance(marker, bytes) else tuple(marker)
        rule = Rule(action, after=after, markers=markers, direction=direction, connection=connection,
                    stall_new=stall_new)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        """Pass-through again for connections accepted from now on."""
        with self._lock:
            self.rules = []
            self._stall_new = False

    def refuse(self) -> None:
        """Close the listening socket: connecting to `port` is refused from now on."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        self._acceptor.join(timeout=5)

    def close(self) -> None:
        """Close everything, stalled connections included; the server sees its sessions end."""
        self._closing.set()
        self.refuse()
        with self._lock:
            conns, held = list(self._conns), list(self._held)
            for rule in self.rules:
                rule.release()
        for conn in conns:
            conn.close()
        for sock in held:
            with contextlib.suppress(OSError):
                sock.close()
        for conn in conns:
            for thread in conn.threads:
                thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- accepting ------------------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self._closing.is_set():
            listener = self._listener
            if listener is None:
                return
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.accepted += 1
                index = self.accepted
                if self._stall_new:
                    self._held.append(client)
                    continue
                rules = list(self.rules)
            try:
                upstream = self.upstream.connect()
            except OSError:
                client.close()  # the server is down: what a proxy in front of it does
                continue
            conn = _Conn(index, client, upstream, rules)
            for sock in conn.sockets():
                sock.settimeout(_POLL_S)
            with self._lock:
                self._conns.append(conn)
            for direction, src, dst in (("c2s", client, upstream), ("s2c", upstream, client)):
                thread = threading.Thread(target=self._pump, args=(conn, src, dst, direction),
                                          name=f"{self.name}-{index}-{direction}", daemon=True)
                conn.threads.append(thread)
                thread.start()

    # -- forwarding -----------------------------------------------------------------------------------
    def _pump(self, conn: _Conn, src: socket.socket, dst: socket.socket, direction: str) -> None:
        while not conn.closed.is_set():
            if conn.stalled:
                conn.closed.wait()
                return
            try:
                data = src.recv(_CHUNK)
            except TimeoutError:
                continue
            except OSError:
                conn.close()
                return
            if not data:  # one side closed: pass it on, as a proxy does
                if not conn.stalled:
                    conn.close()
                return
            self._forward(conn, data, direction, dst)

    def _forward(self, conn: _Conn, data: bytes, direction: str, dst: socket.socket) -> None:
        if conn.stalled:
            return
        with conn.lock:
            start = conn.offset[direction]
            if direction == "c2s":
                self._scan_markers(conn, data, start)
            events = sorted(self._fire_points(conn, data, start, direction), key=lambda e: e[0])
        pos = 0
        for cut, rule in events:
            if cut > pos:
                if not self._send(conn, dst, data[pos:cut], direction):
                    return
                pos = cut
            if not self._fire(conn, rule, direction):
                return
        if pos < len(data):
            self._send(conn, dst, data[pos:], direction)

    def _scan_markers(self, conn: _Conn, data: bytes, start: int) -> None:
        """Advance every rule's marker sequence over this c2s chunk; arm the rules completed."""
        buffer = conn.tail + data
        buffer_start = start - len(conn.tail)
        for rule in conn.rules:
            track = conn.tracks[id(rule)]
            while track.armed_at is None:
                marker = rule.markers[track.stage]
                found = buffer.find(marker, max(track.search_from - buffer_start, 0))
                if found < 0:
                    break
                at = buffer_start + found
                if track.stage == len(rule.markers) - 1:
                    # Counting starts at the marker; the s2c count starts with whatever comes next.
                    track.armed_at = {"c2s": max(at, start), "s2c": conn.offset["s2c"]}
                else:
                    track.stage += 1
                    track.search_from = at + len(marker)
        longest = max((len(m) for r in conn.rules for m in r.markers), default=1)
        conn.tail = buffer[-(longest - 1):] if longest > 1 else b""

    def _fire_points(self, conn: _Conn, data: bytes, start: int, direction: str) -> list[tuple[int, Rule]]:
        points = []
        for rule in conn.rules:
            track = conn.tracks[id(rule)]
            if track.done or track.armed_at is None or rule.direction != direction:
                continue
            at = track.armed_at[direction] + rule.after - start
            if at < len(data):
                points.append((max(at, 0), rule))
        return points

    def _fire(self, conn: _Conn, rule: Rule, direction: str) -> bool:
        """Act; True when forwarding goes on."""
        conn.tracks[id(rule)].done = True
        rule.fired_on.append(conn.index)
        # Before acting: the client sees a drop or a reset at once and may have exited (and the test
        # asked whether the rule fired) before this thread gets any further.
        rule.fired.set()
        if rule.action == "stall":
            conn.stalled = True
            if rule.stall_new:
                with self._lock:
                    self._stall_new = True
        elif rule.action == "drop":
            conn.close()
        elif rule.action == "reset":
            conn.close(reset=True)
        if rule.action == "hold":
            while not rule._released.wait(_POLL_S):
                if conn.closed.is_set() or self._closing.is_set():
                    return False
        return rule.action in ("hold", "notify") and not conn.closed.is_set()

    def _send(self, conn: _Conn, dst: socket.socket, data: bytes, direction: str) -> bool:
        view = memoryview(data)
        while view:
            if conn.closed.is_set() or conn.stalled:
                return False
            try:
                sent = dst.send(view)
            except TimeoutError:
                continue
            except OSError:
                conn.close()
                return False
            view = view[sent:]
            with conn.lock:
                conn.offset[direction] += sent
        return True


def wait_until(predicate: object, timeout: float, what: str) -> None:
    """Poll `predicate()` until true; fail the test naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout}s")
        time.sleep(0.02)
