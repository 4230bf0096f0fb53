"""Settings; every failure is one ConfigError line.

Precedence: CLI flags > environment > TOML file > defaults, except for the two database URLs,
where SPEC §4 has the config file override the environment: flags > config file > environment.

Kept by hand rather than pydantic-settings: the `*_FILE` secret variants, the one-line messages
naming the exact variable, and the shard variables of a Kubernetes Indexed Job are most of the work,
and none of them come for free there.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from reconcile.db import DatabaseUrl
from reconcile.errors import ConfigError
from reconcile.mapping import Mapping
from reconcile.shard import Shard

LOG_FORMATS = ("json", "console", "ecs")
ORPHAN_MODES = ("report", "archive")
COUNTRY_RE = re.compile(r"^[A-Z]{2}$")

ENV_PRODUCT_URL = "PRODUCT_DATABASE_URL"
ENV_MARKETPLACE_URL = "MARKETPLACE_DATABASE_URL"


@dataclass(frozen=True)
class Settings:
    product_url: DatabaseUrl | None = None
    marketplace_url: DatabaseUrl | None = None
    log_format: str = "json"
    orphans: str = "report"
    max_archive: int = 500
    max_archive_ratio: float = 0.10
    report_id_limit: int = 1000
    wait_lock_s: float = 0.0
    connect_timeout_s: int = 10
    connect_retry_s: float = 10.0
    statement_timeout_ms: int = 600_000
    lock_timeout_ms: int = 10_000
    network_timeout_s: float = 30.0
    skip_ids: tuple[str, ...] = ()
    inbound_countries: tuple[str, ...] = ()
    inbound_domain: str = "inbound.keybuzz.io"
    schedule_cron: str = "0 2 * * *"
    schedule_timezone: str = "UTC"
    schedule_grace_s: int = 3600
    schedule_stop_grace_s: float = 60.0
    pushgateway: str | None = None
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
            raise ConfigError(_missing_url(ENV_MARKETPLACE_URL, self.url_flags[1], "marketplace_url"))
        return self.marketplace_url

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def _missing_url(env_name: str, flag: str, key: str) -> str:
    return f"{env_name} is not set (nor {env_name}_FILE, {flag} or database.{key} in the config file)"


# -- value parsers: (raw value, where it came from) -> typed value ---------------------------------

def _int(minimum: int = 0) -> Callable[[Any, str], int]:
    def parse(value: Any, where: str) -> int:
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        try:
            number = int(str(value).strip()) if not isinstance(value, int) else value
        except ValueError:
            raise ConfigError(f"{where} must be an integer, got {value!r}") from None
        if number < minimum:
            raise ConfigError(f"{where} must be >= {minimum}, got {number}")
        return number
    return parse


def _float(minimum: float = 0.0, maximum: float | None = None) -> Callable[[Any, str], float]:
    def parse(value: Any, where: str) -> float:
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be a number, got {value!r}") from None
        if number != number or number < minimum or (maximum is not None and number > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
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


@dataclass(frozen=True)
class _Spec:
    attr: str
    toml: str  # dotted path in the config file
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
    _Spec("wait_lock_s", "reconcile.wait_lock_s", _float(0.0), "RECONCILE_WAIT_LOCK", "--wait-lock"),
    _Spec("report_id_limit", "report.id_limit", _int(0), "RECONCILE_REPORT_ID_LIMIT"),
    _Spec("connect_timeout_s", "database.connect_timeout_s", _int(1), "RECONCILE_CONNECT_TIMEOUT"),
    _Spec("connect_retry_s", "database.connect_retry_s", _float(0.0), "RECONCILE_CONNECT_RETRY"),
    _Spec("statement_timeout_ms", "database.statement_timeout_ms", _int(0), "RECONCILE_STATEMENT_TIMEOUT_MS"),
    _Spec("lock_timeout_ms", "database.lock_timeout_ms", _int(0), "RECONCILE_LOCK_TIMEOUT_MS"),
    _Spec("network_timeout_s", "database.network_timeout_s", _float(0.1), "RECONCILE_NETWORK_TIMEOUT"),
    _Spec("inbound_countries", "inbound.countries", parse_countries, "RECONCILE_INBOUND_COUNTRIES",
          "--ensure-inbound"),
    _Spec("inbound_domain", "inbound.domain", _domain, "INBOUND_DOMAIN"),
    _Spec("schedule_cron", "schedule.cron", _text, "RECONCILE_CRON", "--cron"),
    _Spec("schedule_timezone", "schedule.timezone", _text, "RECONCILE_TIMEZONE", "--timezone"),
    _Spec("schedule_grace_s", "schedule.misfire_grace_s", _int(1), "RECONCILE_MISFIRE_GRACE"),
    _Spec("schedule_stop_grace_s", "schedule.stop_grace_s", _float(0.0), "RECONCILE_STOP_GRACE", "--stop-grace"),
    _Spec("pushgateway", "metrics.pushgateway", _text, "RECONCILE_PUSHGATEWAY_URL"),
)
_URL_SPECS = (("product_url", "database.product_url", ENV_PRODUCT_URL),
              ("marketplace_url", "database.marketplace_url", ENV_MARKETPLACE_URL))
_TABLES = {
    "database": {"product_url", "marketplace_url", "connect_timeout_s", "connect_retry_s",
                 "statement_timeout_ms", "lock_timeout_ms", "network_timeout_s"},
    "reconcile": {"orphans", "max_archive", "max_archive_ratio", "wait_lock_s"},
    "report": {"id_limit"},
    "log": {"format"},
    "inbound": {"countries", "domain"},
    "schedule": {"cron", "timezone", "misfire_grace_s", "stop_grace_s"},
    "metrics": {"pushgateway"},
    "mapping": None,  # checked by Mapping.from_config
}


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
    for table, value in data.items():
        if table not in _TABLES:
            raise ConfigError(f"config file {path}: unknown table [{table}] (expected {', '.join(_TABLES)})")
        if not isinstance(value, dict):
            raise ConfigError(f"config file {path}: {table} must be a table")
        allowed = _TABLES[table]
        if allowed is not None:
            for key in value:
                if key not in allowed:
                    raise ConfigError(f"config file {path}: unknown setting {table}.{key}")
    return data


def _lookup(data: MappingABC[str, Any], dotted: str) -> Any:
    table, key = dotted.split(".", 1)
    return data.get(table, {}).get(key)


def _env_url(env: MappingABC[str, str], name: str) -> str | None:
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
        if not text:
            raise ConfigError(f"{file_var} points at {path}, which is empty")
        return text
    if direct is not None:
        if not direct.strip():
            raise ConfigError(f"{name} is set but empty")
        return direct
    return None


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
        if spec.attr in flags:
            values[spec.attr] = spec.parse(flags[spec.attr], spec.flag_name)
        elif spec.env and env.get(spec.env, "").strip():
            values[spec.attr] = spec.parse(env[spec.env], spec.env)
        elif _lookup(data, spec.toml) is not None:
            values[spec.attr] = spec.parse(_lookup(data, spec.toml), f"{file_where}: {spec.toml}")

    for (attr, toml_key, env_name), flag_name in zip(_URL_SPECS, url_flags, strict=True):
        flag = flags.get(attr)
        if flag is not None:  # given, even empty: an empty flag is an error, not a fallback
            values[attr] = DatabaseUrl.parse(str(flag), flag_name)
        elif _lookup(data, toml_key) is not None:
            values[attr] = DatabaseUrl.parse(str(_lookup(data, toml_key)), f"{file_where}: {toml_key}")
        else:
            from_env = _env_url(env, env_name)
            if from_env is not None:
                source = f"{env_name}_FILE" if env.get(f"{env_name}_FILE") else env_name
                values[attr] = DatabaseUrl.parse(from_env, source)

    if "mapping" in data:
        values["mapping"] = Mapping.from_config(data["mapping"], f"{file_where}: mapping")

    shard_flag = flags.get("shard")
    if shard_flag:
        values["shard"] = Shard.parse(str(shard_flag), "--shard")
    else:
        values["shard"] = Shard.from_env(env)
    return Settings(**values)
