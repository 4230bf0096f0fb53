"""Database URLs: validated once, shown only as `host:port/db`, never with any piece of a password."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from sqlalchemy.engine import URL, make_url

from reconcile.errors import ConfigError

_DRIVERS = {"postgresql", "postgres", "postgresql+psycopg2"}

# Query parameters that only Prisma reads (the marketplace backend's own URLs carry them); libpq
# rejects them, so they are dropped before connecting. `schema` becomes DatabaseUrl.search_path.
PRISMA_ONLY_PARAMETERS = ("schema", "connection_limit", "pool_timeout", "pgbouncer", "socket_timeout",
                          "statement_cache_size", "sslaccept")
# A schema name that can be used as is: an unquoted identifier of at most 63 bytes.
_SCHEMA_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

AMBIGUOUS_URL = ("cannot be read unambiguously: a user name or password holds an unencoded '@', '/', '?' or "
                 "'#'; percent-encode them (%40 %2F %3F %23)")
_WITHHELD = "(details withheld: they would show part of a password)"


@dataclass(frozen=True)
class DatabaseUrl:
    """A validated PostgreSQL URL; `str()` is the redacted form, so it is safe to print.

    `url` is what the driver gets (Prisma-only parameters removed); `search_path` is the schema a
    Prisma-style `?schema=X` names, None when the URL has none."""

    url: URL
    search_path: str | None = None

    @classmethod
    def parse(cls, raw: str, name: str) -> DatabaseUrl:
        """Validate `raw`; `name` (the variable, flag or config key it came from) is the only part of
        the source any error message shows, with no piece of the URL's user info or password."""
        text = raw.strip()
        if not text:
            raise ConfigError(f"{name} is empty")
        if _ambiguous(text):
            raise ConfigError(f"{name} {AMBIGUOUS_URL}")
        try:
            url = make_url(text)
        except Exception:
            raise ConfigError(
                f"{name} is not a valid database URL (expected postgresql://user@host:5432/dbname)"
            ) from None
        secrets = _secrets_of(text, url)
        if url.drivername not in _DRIVERS:
            scheme = _safe(repr(url.drivername.split("+")[0]), secrets, "")
            raise ConfigError(f"{name} must be a postgresql:// URL" + (f", got scheme {scheme}" if scheme else ""))
        if not url.database:
            raise ConfigError(f"{name} names no database (expected postgresql://user@host:5432/dbname)")
        if url.port is not None and not 0 < url.port < 65536:
            raise ConfigError(f"{name} has an invalid port" + _safe(f" {url.port}", secrets, ""))
        search_path = _search_path(text, name, secrets)
        url = url.difference_update_query(PRISMA_ONLY_PARAMETERS)
        _check_libpq_options(url, name, secrets)
        return cls(url.set(drivername="postgresql+psycopg2"), search_path)

    @property
    def display(self) -> str:
        host = self.url.host or self.url.query.get("host") or "localhost"
        if isinstance(host, tuple):
            host = host[0]
        return f"{host}:{self.url.port or 5432}/{self.url.database}"

    def __str__(self) -> str:
        return self.display

    def __repr__(self) -> str:
        return f"DatabaseUrl({self.display})"

    def scrub(self, text: str) -> str:
        """Remove this URL's password (and any URL credentials) from a message."""
        password = self.url.password
        if password:
            text = text.replace(str(password), "***")
        return scrub_credentials(text)


def _ambiguous(text: str) -> bool:
    """True when the URL's user info holds an unencoded '@', '/', '?' or '#', i.e. when readers of
    URLs disagree on where the password ends: RFC 3986 (and libpq) end the authority at the first
    '/', '?' or '#', SQLAlchemy at the first '@' after the password's ':'. Reading such a URL one
    way would connect somewhere unintended or echo a piece of the password as a host, a port or a
    database name, so it is refused whole."""
    _, sep, rest = text.partition("://")
    if not sep:
        return False  # not a URL at all: make_url refuses it with a message that quotes nothing
    if "#" in rest:  # a database URL has no fragment: a '#' is part of a password
        return True
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    if authority.count("@") > 1:
        return True
    path, _, query = tail.partition("?")
    if "@" in path:  # an '@' after a '/': the '/' was in the user info (or '@' in a database name)
        return True
    if any("@" in item.partition("=")[0] for item in query.split("&")):
        return True  # e.g. u:pa?ss@host: a '?' in the password
    if "@" not in authority and "@" in query:
        # RFC 3986 sees no user info here; a reader that stops at the '@' would see one.
        try:
            seen = make_url(text)
        except Exception:
            return False
        return seen.username is not None or seen.password is not None
    return False


def _secrets_of(text: str, url: URL) -> list[str]:
    """Every form of every password in the URL: as written, decoded, and passwords in the query."""

    found: list[str] = []
    if url.password:
        found.append(str(url.password))
    userinfo = text.partition("://")[2].split("/", 1)[0].split("?", 1)[0].rpartition("@")[0]
    if ":" in userinfo:
        written = userinfo.partition(":")[2]
        found += [written, unquote(written)]
    passwords = url.query.get("password")
    for value in (passwords,) if isinstance(passwords, str) else passwords or ():
        found.append(value)
    items = [item.partition("=") for item in text.partition("?")[2].split("&")]
    if any(unquote(key).strip().lower() == "password" for key, _, _ in items):
        # A password in the query may hold an unencoded '&' or '=': where it ends cannot be told,
        # so every key and value of the query may be a piece of it.
        for key, _, value in items:
            found += [key, unquote(key), value, unquote(value)]
    return [s for s in found if s]


def _leaks(text: str, secrets: list[str], window: int = 4) -> bool:
    """True when `text` holds any `window`-character piece of a secret (the whole of a shorter one)."""
    for secret in secrets:
        size = min(window, len(secret))
        if any(secret[i:i + size] in text for i in range(len(secret) - size + 1)):
            return True
    return False


def _safe(detail: str, secrets: list[str], withheld: str = _WITHHELD) -> str:
    """`detail` (text quoted from the URL or a parser), or `withheld` when it would show a secret."""
    return withheld if _leaks(detail, secrets) else detail


def _search_path(text: str, name: str, secrets: list[str]) -> str | None:
    """The `schema=` of a Prisma-style URL. Read from the text itself: SQLAlchemy drops blank
    query values, and an empty `schema=` must be an error, not the default schema."""
    from urllib.parse import parse_qsl

    values = [v for k, v in parse_qsl(text.partition("?")[2], keep_blank_values=True) if k == "schema"]
    if not values:
        return None
    if len(values) > 1:
        raise ConfigError(f"{name}: schema= is given more than once")
    value = values[0]
    if not _SCHEMA_RE.match(value):
        raise ConfigError(f"{name}: schema= must be a plain schema name (letters, digits and _, not starting "
                          f"with a digit, at most 63 characters), got {_safe(repr(value), secrets)}")
    return value


def url_with_secret(url: URL) -> str:
    """`postgresql://user:password@host/db` as libpq takes it: for drivers and tools, never output."""
    return url.set(drivername="postgresql").render_as_string(False)  # False: keep the password


_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def _check_libpq_options(url: URL, name: str, secrets: list[str]) -> None:
    """Let libpq parse the URL now, so an unknown option or a bad sslmode is a configuration
    error (exit 2) instead of a connect failure retried for the whole retry budget. libpq quotes
    what it rejects: the quote is dropped when it holds any piece of a password."""
    from psycopg2 import ProgrammingError
    from psycopg2.extensions import parse_dsn

    try:
        options = parse_dsn(url_with_secret(url))
    except ProgrammingError as exc:
        detail = str(exc).strip().splitlines()[0].removeprefix("invalid dsn: ") if str(exc).strip() else ""
        detail = _safe(scrub_credentials(detail), secrets)
        raise ConfigError(f"{name} is not a valid database URL: {detail}") from None
    sslmode = options.get("sslmode")
    if sslmode is not None and sslmode not in _SSLMODES:
        got = _safe(f", got {sslmode!r}", secrets, "")
        raise ConfigError(f"{name}: sslmode must be one of {', '.join(_SSLMODES)}{got}")


_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:@/\s]*):(?P<pw>[^@\s]*)@", re.I)
_PASSWORD_KV = re.compile(r"(password\s*=\s*)('[^']*'|\S+)", re.I)


def scrub_credentials(text: str) -> str:
    """Blank `user:password@` in URLs and `password = ...` pairs anywhere in a message."""
    text = _CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    return _PASSWORD_KV.sub(r"\1***", text)


_REDIS_SCHEMES = {"redis": 6379, "rediss": 6379}
_REDIS_EXPECTED = "expected redis://[:password@]host:6379/0 or rediss://..."


@dataclass(frozen=True)
class RedisUrl:
    """A validated Redis URL (the `redis` event source); `str()` is `host:port/db`, never a password.

    `url` is what redis-py gets; `password` is kept to remove it from the client's error messages."""

    url: str = field(repr=False)
    display: str
    password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, raw: str, name: str) -> RedisUrl:
        text = raw.strip() if isinstance(raw, str) else ""
        if not text:
            raise ConfigError(f"{name} is empty ({_REDIS_EXPECTED})")
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError:
            raise ConfigError(f"{name} is not a valid Redis URL ({_REDIS_EXPECTED})") from None
        scheme = parts.scheme.lower()
        if scheme not in _REDIS_SCHEMES:
            raise ConfigError(f"{name} must be a redis:// or rediss:// URL ({_REDIS_EXPECTED})")
        if parts.netloc.count("@") > 1 or "@" in parts.path or "#" in text:
            raise ConfigError(f"{name} {AMBIGUOUS_URL}")
        if not parts.hostname:
            raise ConfigError(f"{name} names no host ({_REDIS_EXPECTED})")
        database = parts.path.strip("/") or "0"
        if not database.isdigit():
            raise ConfigError(f"{name}: the database must be a number (redis://host:6379/0)")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        password = unquote(parts.password) if parts.password else None
        return cls(text, f"{host}:{port or _REDIS_SCHEMES[scheme]}/{database}", password)

    def __str__(self) -> str:
        return self.display

    def scrub(self, text: str) -> str:
        """Remove this URL's password (and any URL credentials) from a message."""
        if self.password:
            text = text.replace(self.password, "***")
        return scrub_credentials(text)
