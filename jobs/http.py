"""`tenant-reconcile serve`: keybuzz-backend's three internal endpoints, for callers that still use HTTP.

POST /api/v1/tenants/sync, POST /api/v1/tenants/sync-all, GET /api/v1/tenants/status/{tenantId},
plus GET /healthz. Auth: header X-Internal-Key equal (constant-time) to INBOUND_WEBHOOK_KEY, unless
KEYBUZZ_DEV_MODE=true. Every answer is JSON; errors never carry a stack trace. Needs the `[http]`
extra (Starlette + uvicorn).

Input is checked before anything touches a database, and bad input is always a 4xx, never a 500:
bodies are at most 64 KiB (413, counted while they arrive, so a chunked body cannot grow past it),
UTF-8 JSON objects nested at most 1024 levels; tenant ids follow `reconcile.ids`; fields have
their JSON types (a boolean is `true`/`false`, not `"false"`). Error messages never repeat the
value they reject.
"""

from __future__ import annotations

import codecs
import contextlib
import hmac
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote_to_bytes

import orjson

from jobs.process import exit_now
from reconcile.errors import ConfigError, ReconcileError, TenantNotFound
from reconcile.ids import tenant_id_problem
from reconcile.report.model import ABORTED, FAILED, LOCKED, PARTIAL
from reconcile.settings import Settings, parse_countries, read_variable

if TYPE_CHECKING:
    from reconcile.db.cancel import Cancellation

T = TypeVar("T")

KEY_HEADER = "X-Internal-Key"
KEY_ENV = "INBOUND_WEBHOOK_KEY"
DEV_ENV = "KEYBUZZ_DEV_MODE"
# A run that did not complete, as HTTP: someone else is running (409), the guard or the data refused
# it (422: retrying the same request will not help), a database failed (503: it may).
STATUS_HTTP = {LOCKED: 409, ABORTED: 422, PARTIAL: 422, FAILED: 503}
MAX_BODY_BYTES = 64 * 1024  # a sync request is a few dozen bytes; anything near this is not one
TOO_LARGE = f"request body must be at most {MAX_BODY_BYTES // 1024} KiB"
BAD_COUNTRY = "country must be one two-letter country code (e.g. FR)"


def json_problem(exc: orjson.JSONDecodeError) -> str:
    """Why a body is not JSON, in words that never quote the body (orjson's reasons are fixed texts)."""
    if "depth limit" in exc.msg:  # orjson stops at 1024 levels: no recursion, no RecursionError
        return "request body is nested too deeply (at most 1024 levels)"
    if "surrogate" in exc.msg:
        return "request body is not valid JSON: a string holds a lone surrogate"
    return f"request body is not valid JSON: {exc.msg} (at character {exc.pos})"


def parse_body(raw: bytes) -> dict[str, Any]:
    """The JSON object of a request body; an empty body is an empty object. Raises ValueError with
    the message for the client."""
    if raw.startswith(codecs.BOM_UTF8):  # JSON parsers may ignore a byte order mark; some clients send one
        raw = raw[len(codecs.BOM_UTF8):]
    try:
        text = raw.decode("utf-8")  # strictly: JSON over HTTP is UTF-8, not UTF-16 or Latin-1
    except UnicodeDecodeError:
        raise ValueError("request body must be UTF-8 encoded JSON") from None
    if not text.strip():
        return {}
    try:
        data = orjson.loads(text)  # rejects NaN, lone surrogates, numbers beyond a double, depth > 1024
    except orjson.JSONDecodeError as exc:
        raise ValueError(json_problem(exc)) from None
    if not isinstance(data, dict):
        raise ValueError("request body must be a JSON object")
    return data


def path_problem(raw_path: bytes | None) -> str | None:
    """The server decodes percent-escapes leniently (invalid UTF-8 becomes U+FFFD), so an id with
    invalid bytes, or a UTF-8 encoded surrogate, would be looked up as some other string; refuse it."""
    if raw_path is None:
        return None
    try:
        unquote_to_bytes(raw_path).decode("utf-8")
    except UnicodeDecodeError:
        return "tenantId must be valid UTF-8 text"
    return None


def read_key(env: Mapping[str, str]) -> str | None:
    """INBOUND_WEBHOOK_KEY or the file INBOUND_WEBHOOK_KEY_FILE names (not both)."""
    found = read_variable(env, KEY_ENV)
    return found[0].strip() if found else None


def dev_mode(env: Mapping[str, str]) -> bool:
    return env.get(DEV_ENV, "").strip().lower() == "true"


def sync_request(data: dict[str, Any]) -> tuple[str, str | None]:
    """(tenant id, country or None) of a /sync body; ValueError with the client's message. Unknown
    keys are ignored."""
    tenant_id = data.get("tenantId")
    problem = tenant_id_problem(tenant_id)
    if problem:
        raise ValueError(problem)
    create = data.get("createInboundAddress", True)
    if not isinstance(create, bool):  # "false" is truthy: it used to create an address
        raise ValueError("createInboundAddress must be true or false")
    given = data.get("country", "FR")
    if not isinstance(given, str):  # str(False) or a list would be guessed at; refuse instead
        raise ValueError("country must be a string")
    if not create:
        return str(tenant_id), None
    try:
        countries = parse_countries(given or "FR", "country")
    except ConfigError:
        raise ValueError(BAD_COUNTRY) from None
    if len(countries) != 1:
        raise ValueError(BAD_COUNTRY)
    return str(tenant_id), countries[0]


class InFlight:
    """The runs this server has in progress, each with its Cancellation: a stop cancels them all
    (each is rolled back unless it had committed, and answers), and one that starts after the stop
    is cancelled at once. A run counts as in flight for as long as its worker thread runs it."""

    def __init__(self) -> None:
        self._idle = threading.Condition()
        self._running: set[Cancellation] = set()
        self._stopping: str | None = None

    def call(self, work: Callable[[Cancellation], T]) -> T:
        """`work(cancel)`, in the calling (worker) thread, as a run of this server."""
        from reconcile.db.cancel import Cancellation

        cancel = Cancellation()
        with self._idle:
            self._running.add(cancel)
            stopping = self._stopping
        if stopping is not None:
            cancel.cancel(stopping)
        try:
            return work(cancel)
        finally:
            with self._idle:
                self._running.discard(cancel)
                self._idle.notify_all()

    @property
    def count(self) -> int:
        with self._idle:
            return len(self._running)

    def stop(self, reason: str) -> None:
        with self._idle:
            self._stopping = reason
            running = list(self._running)
        for cancel in running:
            cancel.cancel(reason)

    def wait_idle(self, timeout: float) -> bool:
        """True once no run is in flight; False when some still are after `timeout` seconds."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._running, timeout)


class Api:
    """The endpoints; each handler reads its input, calls the domain function in a worker thread
    (they block on the databases) and shapes the answer (jobs.answers)."""

    def __init__(self, settings: Settings, key: str | None, dev: bool, log: Any,
                 runs: InFlight | None = None) -> None:
        self.settings = settings
        self.key = key
        self.dev = dev
        self.log = log
        self.runs = runs or InFlight()

    @staticmethod
    def error(status: int, message: str) -> Any:
        from starlette.responses import JSONResponse

        return JSONResponse({"success": False, "error": message}, status_code=status)

    def authorized(self, request: Any) -> bool:
        if self.dev:
            return True
        given = request.headers.get(KEY_HEADER, "")
        return self.key is not None and hmac.compare_digest(given.encode(), self.key.encode())

    async def body_of(self, request: Any) -> dict[str, Any]:
        from starlette.exceptions import HTTPException
        from starlette.requests import ClientDisconnect

        declared = request.headers.get("content-length", "")
        # a declared length over the limit is refused before a byte of the body is read
        if declared.isascii() and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise HTTPException(413, TOO_LARGE)
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in request.stream():  # counted as it arrives: chunked bodies have no length
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise HTTPException(413, TOO_LARGE)
                chunks.append(chunk)
        except ClientDisconnect:  # nobody reads the answer, but it is the client's doing, not ours
            raise HTTPException(400, "the client closed the connection before the body was complete") from None
        try:
            return parse_body(b"".join(chunks))
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None

    async def sync(self, request: Any) -> Any:
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import JSONResponse

        from jobs.answers import sync_answer
        from reconcile.single import NOT_FOUND, sync_report, sync_tenant

        try:
            tenant_id, country = sync_request(await self.body_of(request))
        except ValueError as exc:
            return self.error(400, str(exc))
        report = sync_report(self.settings, trigger="http")
        log = self.log.bind(run_id=report.run_id)
        try:
            outcome = await run_in_threadpool(self.runs.call, lambda cancel: sync_tenant(
                self.settings, tenant_id, country, log, cancel, report))
        except TenantNotFound:
            return self.error(404, NOT_FOUND)
        return JSONResponse(sync_answer(outcome), status_code=STATUS_HTTP.get(outcome.report.status, 200))

    async def sync_all(self, request: Any) -> Any:
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import JSONResponse

        from jobs.answers import sync_all_answer
        from jobs.commands import RunRequest, new_report, reconcile_once
        from reconcile.single import unchanged_ids

        report = new_report(self.settings, False, trigger="http")
        report = await run_in_threadpool(self.runs.call, lambda cancel: reconcile_once(
            self.settings, RunRequest(), cancel=cancel, report=report))
        if not report.completed:
            return self.error(STATUS_HTTP[report.status], report.error or report.status)
        try:
            unchanged = await run_in_threadpool(unchanged_ids, self.settings, report)
        except ReconcileError as exc:  # the run is done (committed): its answer stands, without that list
            self.log.warning("http.unchanged_ids_failed", run_id=report.run_id, error=str(exc))
            unchanged = []  # the answer says `truncated`
        return JSONResponse(sync_all_answer(report, unchanged))

    async def status(self, request: Any) -> Any:
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import JSONResponse

        from jobs.answers import status_answer
        from reconcile.single import tenant_status

        tenant_id = request.path_params["tenant_id"]
        problem = path_problem(request.scope.get("raw_path")) or tenant_id_problem(tenant_id)
        if problem:
            return self.error(400, problem)
        found = await run_in_threadpool(self.runs.call, lambda cancel: tenant_status(self.settings, tenant_id,
                                                                                      cancel))
        return JSONResponse(status_answer(found), status_code=200 if found.found else 404)

    def guarded(self, handler: Callable[[Any], Awaitable[Any]]) -> Callable[[Any], Awaitable[Any]]:
        """The key check, and every failure as a JSON answer: never a stack trace to the client."""
        from starlette.exceptions import HTTPException

        async def endpoint(request: Any) -> Any:
            if not self.authorized(request):
                return self.error(401, f"missing or wrong {KEY_HEADER}")
            try:
                return await handler(request)
            except HTTPException as exc:
                return self.error(exc.status_code, str(exc.detail))
            except ReconcileError as exc:
                return self.error(503 if exc.exit_code == 7 else 500, str(exc))
            except Exception:  # the log has the details (type, message, frames; never locals)
                self.log.exception("http.internal_error", path=request.url.path)
                return self.error(500, "internal error")

        return endpoint


def create_app(settings: Settings, key: str | None, dev: bool, log: Any, runs: InFlight | None = None) -> Any:
    """The ASGI application; `key` None is only allowed in dev mode. `runs` tracks its runs in
    flight, for the stop (`serve_until_stopped`)."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    api = Api(settings, key, dev, log, runs)

    async def healthz(request: Any) -> Any:
        return JSONResponse({"status": "ok"})

    async def not_found(request: Any, exc: Exception) -> Any:
        return api.error(404, "not found")

    async def not_allowed(request: Any, exc: Exception) -> Any:
        return api.error(405, "method not allowed")

    app = Starlette(
        routes=[Route("/api/v1/tenants/sync", api.guarded(api.sync), methods=["POST"]),
                Route("/api/v1/tenants/sync-all", api.guarded(api.sync_all), methods=["POST"]),
                Route("/api/v1/tenants/status/{tenant_id:path}", api.guarded(api.status), methods=["GET"]),
                Route("/healthz", healthz, methods=["GET"])],
        exception_handlers={404: not_found, 405: not_allowed},
    )
    return _logged(app, log)


def _logged(app: Any, log: Any) -> Any:
    """One `http.request` event per request (uvicorn's own access log is off)."""
    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        status_code = 500

        async def capture(message: dict[str, Any]) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
            await send(message)

        try:
            await app(scope, receive, capture)
        finally:
            log.info("http.request", method=scope["method"], path=scope["path"], status=status_code,
                     duration_ms=round((time.perf_counter() - started) * 1000, 1))

    return asgi


# After SIGTERM: the runs in flight are cancelled and end within a few seconds (their statements
# cancelled, then their connections cut 2 s later); uvicorn lets their requests answer for this long,
# then drops what is left, so that the process exits within 10 s of the signal.
GRACEFUL_S = 6
ABANDON_AFTER_S = 2.0


def serve_until_stopped(config: Any, sockets: list[socket.socket], runs: InFlight, log: Any) -> None:
    """Run uvicorn's server under the process lifecycle (jobs.process): SIGTERM or SIGINT stop it
    taking requests and cancel the runs in flight (rolled back unless committed; each answers 503
    while its connection is open); the process then exits 0 within 10 s. uvicorn's own signal
    handling is off: it waits for every request with no bound, then dies of the signal (143)."""
    import uvicorn

    from jobs.process import StopSignal

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Any:  # the StopSignal below has the signals
            yield

    config.timeout_graceful_shutdown = GRACEFUL_S
    stop = StopSignal().install()
    server = Server(config)
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if stop.wait(0.2):
                log.info("http.stopping", reason=stop.name, in_flight=runs.count)
                runs.stop(stop.name)
                server.should_exit = True
                return

    watcher = threading.Thread(target=watch, name="http-stop", daemon=True)
    watcher.start()
    try:
        server.run(sockets=sockets)
    finally:
        done.set()
        watcher.join(1.0)
        stop.close()
    if stop.requested:
        _stopped(stop.name, runs, log)


def _stopped(reason: str, runs: InFlight, log: Any) -> None:
    """After the server stopped on a signal. A run still blocked (its thread cannot be cut, e.g. in
    a connect) is left behind: nothing it did is committed unless it had committed already."""
    if runs.wait_idle(ABANDON_AFTER_S):
        log.info("http.stopped", reason=reason)
        return
    log.error("http.run_abandoned", reason=reason, in_flight=runs.count,
              detail="a cancelled run did not end in time; exiting without it")
    exit_now(0)  # a worker thread still blocked would keep the interpreter from exiting


BACKLOG = 2048  # uvicorn's default


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listen_sockets(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for every address `host` resolves to (as asyncio would bind them), bound
    here rather than inside uvicorn, so that an address in use, or not ours, is a configuration
    error in one line (exit 2) instead of a log line and uvicorn's exit 3."""
    where = _address(host, port)

    def reason(exc: OSError) -> str:
        text = exc.strerror or str(exc)
        return text[:1].lower() + text[1:]

    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:  # socket.gaierror: a host name that does not resolve
        raise ConfigError(f"cannot listen on {where}: {reason(exc)}") from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, sockaddr in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # one socket per family, as asyncio does
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(sockaddr)
            sock.listen(BACKLOG)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise ConfigError(f"cannot listen on {where}: {reason(exc)}") from None
    return sockets
