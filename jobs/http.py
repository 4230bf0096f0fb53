"""`tenant-reconcile serve`: the seed's three internal endpoints, for callers that still use HTTP.

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
import hmac
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

import click
import orjson

from jobs.cli import EPILOG, expected_errors, fail, load_with_databases, settings_options
from reconcile.errors import ConfigError, ReconcileError, TenantNotFound
from reconcile.ids import tenant_id_problem
from reconcile.report import Report
from reconcile.settings import Settings, parse_countries

KEY_HEADER = "X-Internal-Key"
KEY_ENV = "INBOUND_WEBHOOK_KEY"
DEV_ENV = "KEYBUZZ_DEV_MODE"
_STATUS_HTTP = {"locked": 409, "aborted": 422, "failed": 503}
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
    direct, path = env.get(KEY_ENV), env.get(f"{KEY_ENV}_FILE")
    if direct and path:
        raise ConfigError(f"{KEY_ENV} and {KEY_ENV}_FILE are both set; set only one")
    if path:
        try:
            direct = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{KEY_ENV}_FILE points at {path}, which cannot be read: {exc.strerror}") from None
    return direct.strip() if direct and direct.strip() else None


def dev_mode(env: Mapping[str, str]) -> bool:
    return env.get(DEV_ENV, "").strip().lower() == "true"


def create_app(settings: Settings, key: str | None, dev: bool, log: Any) -> Any:
    """The Starlette application; `key` None is only allowed in dev mode."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from reconcile.inbound import inbound_hook
    from reconcile.reconciler import RunOptions, run_reconcile
    from reconcile.report import new_run_id
    from reconcile.tenant import NOT_FOUND, sync_tenant, tenant_status

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"success": False, "error": message}, status_code=status)

    def authorized(request: Request) -> bool:
        if dev:
            return True
        given = request.headers.get(KEY_HEADER, "")
        return key is not None and hmac.compare_digest(given.encode(), key.encode())

    async def body_of(request: Request) -> dict[str, Any]:
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

    async def sync(request: Request) -> Response:
        data = await body_of(request)  # unknown keys are ignored, as the seed did
        tenant_id = data.get("tenantId")
        problem = tenant_id_problem(tenant_id)
        if problem:
            return error(400, problem)
        create = data.get("createInboundAddress", True)
        if not isinstance(create, bool):  # "false" is truthy: it used to create an address
            return error(400, "createInboundAddress must be true or false")
        given = data.get("country", "FR")
        if not isinstance(given, str):  # str(False) or a list would be guessed at; refuse instead
            return error(400, "country must be a string")
        country: str | None = None
        if create:
            try:
                countries = parse_countries(given or "FR", "country")
            except ConfigError:
                return error(400, BAD_COUNTRY)
            if len(countries) != 1:
                return error(400, BAD_COUNTRY)
            country = countries[0]
        run_id = new_run_id()
        try:
            result = await run_in_threadpool(sync_tenant, settings, tenant_id, country, log.bind(run_id=run_id),
                                             run_id)
        except TenantNotFound:
            return error(404, NOT_FOUND)
        status = result.report.status if result.report else "failed"
        code = 422 if status == "partial" else _STATUS_HTTP.get(status, 200)  # row error: the data is wrong
        return JSONResponse(result.body, status_code=code)

    async def sync_all(request: Request) -> Response:
        run_id = new_run_id()
        report = Report(run_id=run_id, mode="apply", shard=settings.shard.label, id_limit=settings.report_id_limit)
        report = await run_in_threadpool(run_reconcile, settings, RunOptions(after_write=inbound_hook(settings)),
                                         log.bind(run_id=run_id), report)
        if report.status in _STATUS_HTTP:
            return error(_STATUS_HTTP[report.status], report.extra.get("error", report.status))
        body = report.as_dict()
        skipped = await run_in_threadpool(_unchanged_ids, settings, report)
        return JSONResponse({
            "success": report.status == "success",
            "total": report.total,
            "results": {"created": body["created"], "updated": [u["id"] for u in body["updated"]],
                        "skipped": skipped, "errors": body["errors"], "archived": body["archived"],
                        "orphans": body["orphans"], "conflicts": body["conflicts"]},
            "counts": body["counts"], "truncated": body["truncated"] or len(skipped) < body["counts"]["unchanged"],
            "runId": run_id, "status": report.status,
        })

    async def status(request: Request) -> Response:
        tenant_id = request.path_params["tenant_id"]
        problem = path_problem(request.scope.get("raw_path")) or tenant_id_problem(tenant_id)
        if problem:
            return error(400, problem)
        body, code = await run_in_threadpool(tenant_status, settings, tenant_id)
        return JSONResponse(body, status_code=404 if code == TenantNotFound.exit_code else 200)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    def guarded(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            if not authorized(request):
                return error(401, f"missing or wrong {KEY_HEADER}")
            try:
                return await handler(request)
            except HTTPException as exc:
                return error(exc.status_code, str(exc.detail))
            except ReconcileError as exc:
                return error(503 if exc.exit_code == 7 else 500, str(exc))
            except Exception as exc:  # never a stack trace to the client; the log has the details
                log.exception("http.internal_error", path=request.url.path, error_type=type(exc).__name__)
                return error(500, "internal error")

        return endpoint

    async def not_found(request: Request, exc: Exception) -> Response:
        return error(404, "not found")

    async def not_allowed(request: Request, exc: Exception) -> Response:
        return error(405, "method not allowed")

    app = Starlette(
        routes=[Route("/api/v1/tenants/sync", guarded(sync), methods=["POST"]),
                Route("/api/v1/tenants/sync-all", guarded(sync_all), methods=["POST"]),
                Route("/api/v1/tenants/status/{tenant_id:path}", guarded(status), methods=["GET"]),
                Route("/healthz", healthz, methods=["GET"])],
        exception_handlers={404: not_found, 405: not_allowed},
    )

    async def logged(scope: dict[str, Any], receive: Any, send: Any) -> None:
        """One `http.request` event per request (uvicorn's own access log is off)."""
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

    return logged


def _unchanged_ids(settings: Settings, report: Report) -> list[str]:
    """The seed listed `skipped` ids; we keep counts, so read up to id_limit unchanged ids back."""
    import sqlalchemy as sa

    from reconcile.db import engine_for

    touched = {*report.lists["created"], *report.lists["archived"], *report.lists["conflicts"],
               *(u["id"] for u in report.lists["updated"]), *(e["id"] for e in report.lists["errors"])}
    limit = report.id_limit
    engine = engine_for(settings.require_product())
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(f"SELECT id FROM tenants WHERE {settings.shard.sql_predicate()} "
                                        'ORDER BY id COLLATE "C" LIMIT :n'), {"n": limit + len(touched)})
            return [r.id for r in rows if r.id not in touched][:min(limit, report.counts["unchanged"])]
    finally:
        engine.dispose()


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


@click.command(epilog=EPILOG)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@settings_options
@click.pass_context
@expected_errors
def serve(ctx: click.Context, host: str, port: int, **flags: Any) -> None:
    """Serve the seed's HTTP endpoints (needs the [http] extra).

    Auth: X-Internal-Key must equal INBOUND_WEBHOOK_KEY (or the file INBOUND_WEBHOOK_KEY_FILE);
    KEYBUZZ_DEV_MODE=true disables the check (and says so at startup)."""
    from reconcile.logs import get_logger

    settings = load_with_databases(ctx, flags)
    key = read_key(os.environ)
    dev = dev_mode(os.environ)
    if key is None and not dev:
        fail(f"configuration error: {KEY_ENV} is not set (nor {KEY_ENV}_FILE); required unless {DEV_ENV}=true")
    try:
        import uvicorn
    except ImportError:
        fail("serve needs the http extra: pip install 'tenant-reconcile[http]'")
    from uvicorn.main import STARTUP_FAILURE

    log = get_logger(component="http")
    if dev:
        log.warning("http.dev_mode", detail=f"{DEV_ENV}=true: requests are not authenticated")
    sockets = listen_sockets(host, port)  # a port in use is exit 2 here, before anything says "listening"
    log.info("http.listening", host=host, port=port)
    config = uvicorn.Config(create_app(settings, key, dev, log), host=host, port=port, log_config=None,
                            access_log=False, server_header=False, date_header=False, backlog=BACKLOG)
    try:
        uvicorn.Server(config).run(sockets=sockets)
    except SystemExit as exc:
        if exc.code == STARTUP_FAILURE:  # uvicorn's 3 would read as "partial"
            fail("internal error: the HTTP server could not start (see the log above)", 1)
        raise
    finally:
        for sock in sockets:
            sock.close()
