"""Settings; every failure is one ConfigError line.

One precedence rule for every setting, the database URLs included: CLI flag > environment > config
file > defaults. (A config file must never beat an exported URL: an operator who exports a staging
URL while RECONCILE_CONFIG names production would otherwise write to production.)

Kept by hand rather than pydantic-settings: the `*_FILE` secret variants, the one-line messages
naming the exact variable, and the shard variables of a Kubernetes Indexed Job are most of the work,
and none of them come for free there.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Callable
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from reconcile.db.urls import DatabaseUrl, RedisUrl
from reconcile.errors import ConfigError
from reconcile.mapping import Mapping
from reconcile.metrics import PushgatewayUrl
from reconcile.shard import Shard

LOG_FORMATS = ("json", "console", "ecs")
ORPHAN_MODES = ("report", "archive")
EVENT_SOURCES = ("pg", "redis", "poll")  # `schedule --listen`: see jobs.events.sources
DEFAULT_REDIS_CHANNEL = "keybuzz:tenant.changed"
ENV_REDIS_URL = "REDIS_URL"
COUNTRY_RE = re.compile(r"^[A-Z]{2}$")

ENV_PRODUCT_URL = "PRODUCT_DATABASE_URL"
ENV_MARKETPLACE_URL = "MARKETPLACE_DATABASE_URL"
# What keybuzz-backend's own pods call the marketplace database: read when neither
# MARKETPLACE_DATABASE_URL nor its _FILE variant is set (and no flag), never for the product.
ENV_MARKETPLACE_FALLBACK = "DATABASE_URL"


@dataclass(frozen=True)
class Settings:
    product_url: DatabaseUrl | None = None
    marketplace_url: DatabaseUrl | None = None
    # Where each URL came from, for the start event and `check`: "--product-url",
    # "PRODUCT_DATABASE_URL", "PRODUCT_DATABASE_URL_FILE", "DATABASE_URL", "DATABASE_URL_FILE" or
    # "config file PATH: database.product_url"; None when not set.
    product_from: str | None = None
    marketplace_from: str | None = None
    log_format: str = "json"
    orphans: str = "report"
    max_archive: int = 500
    max_archive_ratio: float = 0.10
    # A one-off, from its flag only: lifts the guard's empty-product rule for this invocation.
    allow_empty_source: bool = False
    skip_ids: tuple[str, ...] = ()
    report_id_limit: int = 1000
    wait_lock_s: float = 0.0
    connect_timeout_s: int = 10
    connect_retry_s: float = 10.0
    network_timeout_s: float = 30.0
    statement_timeout_ms: int = 600_000
    lock_timeout_ms: int = 10_000
    inbound_countries: tuple[str, ...] = ()
    inbound_domain: str = "inbound.keybuzz.io"
    schedule_cron: str = "0 2 * * *"
    schedule_timezone: str = "UTC"
    schedule_grace_s: int = 3600
    schedule_stop_grace_s: float = 5.0
    pushgateway: PushgatewayUrl | None = None
    metrics_port: int | None = None  # `schedule` serves /metrics and /healthz here; off when None
    metrics_host: str = "0.0.0.0"
    listen: tuple[str, ...] = ()  # event sources of `schedule --listen`, in EVENT_SOURCES
    poll_interval_s: float = 5.0
    redis_url: RedisUrl | None = None
    redis_channel: str = DEFAULT_REDIS_CHANNEL
    shard: Shard = field(default_factory=Shard)
    mapping: Mapping = field(default_factory=Mapping)
    config_file: str | None = None
    url_flags: tuple[str, str] = ("--product-url", "--marketplace-url")  # init-db: --product, --marketplace

    def require_product(self) -> DatabaseUrl:
        if self.product_url is None:
            raise ConfigError(_missing_url(ENV_PRODUCT_URL, self.url_flags[0], "product_url"))
        return self.product_url

    def require_marketplace(self) -> DatabaseUrl:
        if self.marketplace_url is None:
            raise ConfigError(_missing_url(ENV_MARKETPLACE_URL, self.url_flags[1], "marketplace_url",
                                           ENV_MARKETPLACE_FALLBACK))
        return self.marketplace_url

    def require_redis(self) -> RedisUrl:
        if self.redis_url is None:
            raise ConfigError(f"{ENV_REDIS_URL} is not set: the redis event source needs it (or {ENV_REDIS_URL}_FILE, "
                              "--redis-url, or listen.redis_url in the config file)")
        return self.redis_url

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def _missing_url(env_name: str, flag: str, key: str, fallback: str | None = None) -> str:
    also = f", {fallback}" if fallback else ""
    return f"{env_name} is not set (nor {env_name}_FILE{also}, {flag} or database.{key} in the config file)"


# -- value parsers: (raw value, where it came from) -> typed value ---------------------------------

# Upper bounds of the durations: past them a value is a typo, and the driver or the server would
# refuse it only later (libpq's and PostgreSQL's timeouts are 32-bit integers).
DAY_S = 86_400
INT32_MAX = 2_147_483_647


def _int(minimum: int = 0, maximum: int | None = None) -> Callable[[Any, str], int]:
    def parse(value: Any, where: str) -> int:
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        try:
            number = int(str(value).strip()) if not isinstance(value, int) else value
        except ValueError:
            raise ConfigError(f"{where} must be an integer, got {value!r}") from None
        if number < minimum:
            raise ConfigError(f"{where} must be >= {minimum}, got {number}")
        if maximum is not None and number > maximum:
            raise ConfigError(f"{where} must be at most {maximum}, got {number}")
        return number
    return parse


def _float(minimum: float = 0.0, maximum: float | None = None, *,
           above_minimum: bool = False) -> Callable[[Any, str], float]:
    """A number in [minimum, maximum] (or (minimum, maximum] with `above_minimum`)."""
    def parse(value: Any, where: str) -> float:
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be a number, got {value!r}") from None
        too_low = number <= minimum if above_minimum else number < minimum
        if not math.isfinite(number) or too_low or (maximum is not None and number > maximum):
            if maximum is not None and above_minimum:
                bound = f"> {minimum} and at most {maximum}"
            elif maximum is not None:
                bound = f"between {minimum} and {maximum}"
            else:
                bound = f"> {minimum}" if above_minimum else f">= {minimum}"
            raise ConfigError(f"{where} must be {bound}, got {value!r}")
        return number
    return parse


def _choice(choices: tuple[str, ...]) -> Callable[[Any, str], str]:
    def parse(value: Any, where: str) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            raise ConfigError(f"{where} must be one of {', '.join(choices)}, got {value!r}")
        return text
    return parse


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where} must be a non-empty string")
    return value.strip()


_DOMAIN_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                        r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


def _domain(value: Any, where: str) -> str:
    """The e-mail domain of inbound addresses: a host name (letters, digits, '-', dots)."""
    text = _text(value, where)
    if not _DOMAIN_RE.match(text):
        raise ConfigError(f"{where} must be a domain name like inbound.keybuzz.io, got {text!r}")
    return text.lower()


def parse_countries(value: Any, where: str) -> tuple[str, ...]:
    """`FR,de` or ["FR", "de"] -> ("FR", "DE"); each must be two letters."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ConfigError(f"{where} must be a list of country codes like FR,DE")
    out: list[str] = []
    for item in items:
        code = str(item).strip().upper()
        if not code:
            continue
        if not COUNTRY_RE.match(code):
            raise ConfigError(f"{where}: {item!r} is not a two-letter country code")
        if code not in out:
            out.append(code)
    return tuple(out)


def parse_skip_ids(value: Any, where: str) -> tuple[str, ...]:
    """`a, b,,c` (flag, environment) or ["a", "b"] (config file) -> ("a", "b", "c"): items trimmed,
    empty ones dropped, duplicates once. An id holding a comma can only be given in the file."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(item, str) for item in items):
        raise ConfigError(f"{where} must be a list of tenant ids (strings), like [\"kbz-001\", \"kbz-002\"]")
    return tuple(dict.fromkeys(tenant_id for tenant_id in (item.strip() for item in items) if tenant_id))


def parse_sources(value: Any, where: str) -> tuple[str, ...]:
    """`pg,redis` or a TOML list: known sources, each once, in the order given."""
    items = value if isinstance(value, list) else str(value).split(",")
    sources: list[str] = []
    for item in items:
        name = str(item).strip().lower()
        if name and name not in EVENT_SOURCES:
            raise ConfigError(f"{where}: unknown event source {str(item).strip()!r} "
                              f"(expected {', '.join(EVENT_SOURCES)})")
        if name and name not in sources:
            sources.append(name)
    return tuple(sources)


def _port(value: Any, where: str) -> int:
    number = _int(0)(value, where)
    if not 1 <= number <= 65535:
        raise ConfigError(f"{where} must be a TCP port between 1 and 65535, got {number}")
    return number


def _listen_host(value: Any, where: str) -> str:
    """The address a server listens on: an IP address (0.0.0.0, ::, 127.0.0.1) or a host name. The
    value is never echoed in an error: whatever was pasted there by mistake stays out of the logs."""
    import ipaddress

    text = value.strip() if isinstance(value, str) else ""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if _DOMAIN_RE.match(text):
        return text.lower()
    raise ConfigError(f"{where} must be an IP address or a host name to listen on (e.g. 0.0.0.0, ::, 127.0.0.1)")


def _flag_bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where} takes no value")
    return value


@dataclass(frozen=True)
class _Spec:
    attr: str
    toml: str | None  # dotted path in the config file; None: not a config-file setting
    parse: Callable[[Any, str], Any]
    env: str | None = None
    flag: str | None = None  # the CLI flag, when not --<attr with dashes>

    @property
    def flag_name(self) -> str:
        return self.flag or f"--{self.attr.replace('_', '-')}"


_SPECS = (
    _Spec("log_format", "log.format", _choice(LOG_FORMATS), "RECONCILE_LOG_FORMAT"),
    _Spec("orphans", "reconcile.orphans", _choice(ORPHAN_MODES), "RECONCILE_ORPHANS"),
    _Spec("max_archive", "reconcile.max_archive", _int(0), "RECONCILE_MAX_ARCHIVE"),
    _Spec("max_archive_ratio", "reconcile.max_archive_ratio", _float(0.0, 1.0), "RECONCILE_MAX_ARCHIVE_RATIO"),
    # A flag only, never the environment or the file: a persistent "allow" would also let through
    # the night the product URL points at an empty or wrongly restored database.
    _Spec("allow_empty_source", None, _flag_bool),
    _Spec("skip_ids", "reconcile.skip_ids", parse_skip_ids, "RECONCILE_SKIP_IDS", "--skip"),
    _Spec("wait_lock_s", "reconcile.wait_lock_s", _float(0.0, DAY_S), "RECONCILE_WAIT_LOCK", "--wait-lock"),
    _Spec("report_id_limit", "report.id_limit", _int(0), "RECONCILE_REPORT_ID_LIMIT"),
    _Spec("connect_timeout_s", "database.connect_timeout_s", _int(1, 3600), "RECONCILE_CONNECT_TIMEOUT"),
    _Spec("connect_retry_s", "database.connect_retry_s", _float(0.0, DAY_S), "RECONCILE_CONNECT_RETRY"),
    _Spec("network_timeout_s", "database.network_timeout_s", _float(0.0, DAY_S, above_minimum=True),
          "RECONCILE_NETWORK_TIMEOUT"),
    _Spec("statement_timeout_ms", "database.statement_timeout_ms", _int(0, INT32_MAX),
          "RECONCILE_STATEMENT_TIMEOUT_MS"),
    _Spec("lock_timeout_ms", "database.lock_timeout_ms", _int(0, INT32_MAX), "RECONCILE_LOCK_TIMEOUT_MS"),
    _Spec("inbound_countries", "inbound.countries", parse_countries, "RECONCILE_INBOUND_COUNTRIES",
          "--ensure-inbound"),
    _Spec("inbound_domain", "inbound.domain", _domain, "INBOUND_DOMAIN"),
    _Spec("schedule_cron", "schedule.cron", _text, "RECONCILE_CRON", "--cron"),
    _Spec("schedule_timezone", "schedule.timezone", _text, "RECONCILE_TIMEZONE", "--timezone"),
    _Spec("schedule_grace_s", "schedule.misfire_grace_s", _int(1, 7 * DAY_S), "RECONCILE_MISFIRE_GRACE"),
    _Spec("schedule_stop_grace_s", "schedule.stop_grace_s", _float(0.0, 3600.0), "RECONCILE_STOP_GRACE",
          "--stop-grace"),
    _Spec("pushgateway", "metrics.pushgateway", PushgatewayUrl.parse, "RECONCILE_PUSHGATEWAY_URL"),
    _Spec("metrics_port", "metrics.port", _port, "RECONCILE_METRICS_PORT"),
    _Spec("metrics_host", "metrics.host", _listen_host, "RECONCILE_METRICS_HOST"),
    _Spec("listen", "listen.sources", parse_sources, "RECONCILE_LISTEN"),
    _Spec("poll_interval_s", "listen.poll_interval_s", _float(0.0, 3600.0, above_minimum=True),
          "RECONCILE_POLL_INTERVAL", "--poll-interval"),
    _Spec("redis_channel", "listen.redis_channel", _text, "RECONCILE_REDIS_CHANNEL"),
)
# (attribute, config key, environment variable, fallback variable)
_URL_SPECS = (("product_url", "database.product_url", ENV_PRODUCT_URL, None),
              ("marketplace_url", "database.marketplace_url", ENV_MARKETPLACE_URL, ENV_MARKETPLACE_FALLBACK))
_TABLES = {
    "database": {"product_url", "marketplace_url", "connect_timeout_s", "connect_retry_s",
                 "network_timeout_s", "statement_timeout_ms", "lock_timeout_ms"},
    "reconcile": {"orphans", "max_archive", "max_archive_ratio", "wait_lock_s", "skip_ids"},
    "report": {"id_limit"},
    "log": {"format"},
    "inbound": {"countries", "domain"},
    "schedule": {"cron", "timezone", "misfire_grace_s", "stop_grace_s"},
    "metrics": {"pushgateway", "port", "host"},
    "listen": {"sources", "poll_interval_s", "redis_url", "redis_channel"},
    "mapping": None,  # checked by Mapping.from_config
}


_FLAG_ONLY = {"reconcile": {"allow_empty_source": "is a command-line flag only (--allow-empty-source, for one "
                                                 "run), never a persistent setting"}}


def read_config_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 (byte {exc.start}); TOML files are UTF-8") from None
    for table, value in data.items():
        if table not in _TABLES:
            raise ConfigError(f"config file {path}: unknown table [{table}] (expected {', '.join(_TABLES)})")
        if not isinstance(value, dict):
            raise ConfigError(f"config file {path}: {table} must be a table")
        allowed = _TABLES[table]
        if allowed is not None:
            for key in value:
                if key in _FLAG_ONLY.get(table, {}):
                    raise ConfigError(f"config file {path}: {table}.{key} {_FLAG_ONLY[table][key]}")
                if key not in allowed:
                    raise ConfigError(f"config file {path}: unknown setting {table}.{key}")
    return data


def _lookup(data: MappingABC[str, Any], dotted: str) -> Any:
    table, key = dotted.split(".", 1)
    return data.get(table, {}).get(key)


def read_variable(env: MappingABC[str, str], name: str) -> tuple[str, str] | None:
    """(value, the variable it came from) from `name` or, for a mounted Secret, the file `name_FILE`
    names; None when neither is set. Both set, an unreadable or empty file, or an empty value are
    configuration errors naming the variable (never its value)."""
    direct = env.get(name)
    file_var = f"{name}_FILE"
    path = env.get(file_var)
    if direct and path:
        raise ConfigError(f"{name} and {file_var} are both set; set only one")
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{file_var} points at {path}, which cannot be read: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{file_var} points at {path}, which is not UTF-8 text") from None
        if not text:
            raise ConfigError(f"{file_var} points at {path}, which is empty")
        return text, file_var
    if direct is not None:
        if not direct.strip():
            raise ConfigError(f"{name} is set but empty")
        return direct, name
    return None


@dataclass(frozen=True)
class _Sources:
    """Where settings come from, in precedence order: CLI flags, the environment, the config file."""

    flags: MappingABC[str, Any]
    env: MappingABC[str, str]
    data: MappingABC[str, Any]
    file_where: str


def _resolve_url(sources: _Sources, spec: tuple[str, str, str, str | None],
                 flag_name: str) -> tuple[DatabaseUrl, str] | None:
    """One URL by the one rule: flag > environment (the variable, then its fallback) > config file."""
    attr, toml_key, env_name, fallback = spec
    flag = sources.flags.get(attr)
    if flag is not None:  # given, even empty: an empty flag is an error, not a fallback
        return DatabaseUrl.parse(str(flag), flag_name), flag_name
    for name in (env_name, fallback):
        found = read_variable(sources.env, name) if name else None
        if found is not None:
            text, source = found
            return DatabaseUrl.parse(text, source), source
    raw = _lookup(sources.data, toml_key)
    if raw is not None:
        source = f"{sources.file_where}: {toml_key}"
        if not isinstance(raw, str):
            raise ConfigError(f"{source} must be a string")
        return DatabaseUrl.parse(raw, source), source
    return None


def _resolve_redis(sources: _Sources) -> RedisUrl | None:
    """REDIS_URL by the same rule: --redis-url > REDIS_URL or REDIS_URL_FILE > listen.redis_url."""
    flag = sources.flags.get("redis_url")
    if flag is not None:
        return RedisUrl.parse(str(flag), "--redis-url")
    found = read_variable(sources.env, ENV_REDIS_URL)
    if found is not None:
        return RedisUrl.parse(*found)
    raw = _lookup(sources.data, "listen.redis_url")
    if raw is None:
        return None
    where = f"{sources.file_where}: listen.redis_url"
    if not isinstance(raw, str):
        raise ConfigError(f"{where} must be a string")
    return RedisUrl.parse(raw, where)


def _refuse_fallback_to_the_product(values: MappingABC[str, Any]) -> None:
    """DATABASE_URL is some application's own database: in a pod of the product application it is
    the product database, and the run must not take it for the marketplace."""
    product, market = values.get("product_url"), values.get("marketplace_url")
    source = values.get("marketplace_from")
    if (product is not None and market is not None and source is not None
            and source.startswith(ENV_MARKETPLACE_FALLBACK) and product.display == market.display):
        raise ConfigError(f"{source} names the product database {product.display}; set {ENV_MARKETPLACE_URL} "
                          "to the marketplace database")


def load_settings(
    *,
    config_file: str | None = None,
    env: MappingABC[str, str] | None = None,
    flags: MappingABC[str, Any] | None = None,
    url_flags: tuple[str, str] = Settings.url_flags,
) -> Settings:
    """Resolve settings. `flags` holds CLI values by Settings attribute name; None means not given.
    `url_flags` names the URL flags in messages (`init-db` calls them --product/--marketplace)."""
    env = os.environ if env is None else env
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    config_file = config_file or env.get("RECONCILE_CONFIG") or None
    data = read_config_file(config_file) if config_file else {}
    file_where = f"config file {config_file}"

    values: dict[str, Any] = {"config_file": config_file, "url_flags": url_flags}
    for spec in _SPECS:
        raw = _lookup(data, spec.toml) if spec.toml else None
        if spec.attr in flags:
            values[spec.attr] = spec.parse(flags[spec.attr], spec.flag_name)
        elif spec.env and env.get(spec.env, "").strip():
            values[spec.attr] = spec.parse(env[spec.env], spec.env)
        elif raw is not None and spec.toml:
            values[spec.attr] = spec.parse(raw, f"{file_where}: {spec.toml}")

    sources = _Sources(flags, env, data, file_where)
    for spec, flag_name in zip(_URL_SPECS, url_flags, strict=True):
        resolved = _resolve_url(sources, spec, flag_name)
        if resolved is not None:
            attr = spec[0]
            values[attr], values[attr.replace("_url", "_from")] = resolved
    _refuse_fallback_to_the_product(values)
    redis_url = _resolve_redis(sources)
    if redis_url is not None:
        values["redis_url"] = redis_url

    if "mapping" in data:
        values["mapping"] = Mapping.from_config(data["mapping"], f"{file_where}: mapping")

    shard_flag = flags.get("shard")
    if shard_flag:
        values["shard"] = Shard.parse(str(shard_flag), "--shard")
    else:
        values["shard"] = Shard.from_env(env)
    return Settings(**values)
