"""Settings: one precedence rule (flag > env > file > default, URLs included), *_FILE secrets, URL shapes,
one-line errors that never show a password or any part of it."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from reconcile.errors import ConfigError
from reconcile.mapping import Mapping
from reconcile.settings import Settings, load_settings
from reconcile.shard import Shard

REPO = Path(__file__).resolve().parent.parent
P = "postgresql://u@p-host:5432/keybuzz"
M = "postgresql://u@m-host:5433/keybuzz_backend"


def write(tmp_path: Path, text: str, name: str = "c.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_defaults_without_anything():
    s = load_settings(env={})
    assert (s.product_url, s.marketplace_url, s.max_archive, s.max_archive_ratio, s.orphans) == (
        None, None, 500, 0.10, "report")
    assert s.shard == Shard(0, 1)


def test_flag_beats_env_beats_file(tmp_path):
    cfg = write(tmp_path, '[reconcile]\nmax_archive = 7\norphans = "archive"\n[log]\nformat = "console"\n')
    env = {"RECONCILE_MAX_ARCHIVE": "8"}
    assert load_settings(config_file=cfg, env={}).max_archive == 7
    assert load_settings(config_file=cfg, env=env).max_archive == 8
    s = load_settings(config_file=cfg, env=env, flags={"max_archive": 9, "orphans": None})
    assert (s.max_archive, s.orphans, s.log_format) == (9, "archive", "console")


def test_urls_from_env_file_variant_and_flags(tmp_path):
    secret = tmp_path / "url"
    secret.write_text(M + "\n")
    s = load_settings(env={"PRODUCT_DATABASE_URL": P, "MARKETPLACE_DATABASE_URL_FILE": str(secret)})
    assert (s.require_product().display, s.require_marketplace().display) == (
        "p-host:5432/keybuzz", "m-host:5433/keybuzz_backend")
    s = load_settings(env={"PRODUCT_DATABASE_URL": P}, flags={"product_url": M})
    assert s.require_product().display == "m-host:5433/keybuzz_backend"


def test_urls_from_config_file(tmp_path):
    cfg = write(tmp_path, f'[database]\nproduct_url = "{P}"\nmarketplace_url = "{M}"\n')
    s = load_settings(config_file=cfg, env={})
    assert s.require_marketplace().display == "m-host:5433/keybuzz_backend"


def test_urls_follow_the_one_precedence_rule_flag_then_env_then_config_file(tmp_path):
    # The environment now beats the config file for URLs too (it used to be the other way round: an
    # exported staging URL lost to a config file naming production).
    cfg = write(tmp_path, f'[database]\nproduct_url = "{M}"\nmarketplace_url = "{M}"\n')
    env = {"PRODUCT_DATABASE_URL": P}
    s = load_settings(config_file=cfg, env=env)
    assert s.require_product().display == "p-host:5432/keybuzz"              # the env beats the file
    assert s.require_marketplace().display == "m-host:5433/keybuzz_backend"  # not in the env: the file
    s = load_settings(config_file=cfg, env=env, flags={"product_url": M})
    assert s.require_product().display == "m-host:5433/keybuzz_backend"      # the flag beats both


def test_an_empty_url_flag_is_an_error_not_a_fallback():
    with pytest.raises(ConfigError, match="--product-url is empty"):
        load_settings(env={"PRODUCT_DATABASE_URL": P}, flags={"product_url": ""})


@pytest.mark.parametrize(("url", "fragment"), [
    ("postgresql://u:pw@h/db?sslmode=bogus", "sslmode must be one of"),
    ("postgresql://u:pw@h/db?bogusopt=1", 'invalid URI query parameter: "bogusopt"'),
])
def test_bad_connection_options_are_config_errors_before_connecting(url, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)) as caught:
        load_settings(env={"PRODUCT_DATABASE_URL": url})
    assert "PRODUCT_DATABASE_URL" in str(caught.value) and "pw" not in str(caught.value)


@pytest.mark.parametrize("domain", ["zz@bad domain", "inbound..keybuzz.io", "-x.io", "a_b.io"])
def test_inbound_domain_must_be_a_domain_name(domain):
    with pytest.raises(ConfigError, match="INBOUND_DOMAIN must be a domain name"):
        load_settings(env={"INBOUND_DOMAIN": domain})
    assert load_settings(env={"INBOUND_DOMAIN": "Mail.Example.COM"}).inbound_domain == "mail.example.com"


def test_config_file_from_env_variable(tmp_path):
    cfg = write(tmp_path, "[reconcile]\nmax_archive = 3\n")
    assert load_settings(env={"RECONCILE_CONFIG": cfg}).max_archive == 3


@pytest.mark.parametrize(("env", "names"), [
    ({}, "PRODUCT_DATABASE_URL"),
    ({"PRODUCT_DATABASE_URL": P}, "MARKETPLACE_DATABASE_URL"),
])
def test_missing_url_names_the_variable(env, names):
    s = load_settings(env=env)
    with pytest.raises(ConfigError, match=names):
        s.require_product()
        s.require_marketplace()


@pytest.mark.parametrize(("value", "fragment"), [
    ("not a url", "PRODUCT_DATABASE_URL is not a valid database URL"),
    ("mysql://u@h/db", "PRODUCT_DATABASE_URL must be a postgresql:// URL"),
    ("postgresql://u@h:5432", "PRODUCT_DATABASE_URL names no database"),
    ("postgresql://u@h:notaport/db", "PRODUCT_DATABASE_URL is not a valid database URL"),
    ("   ", "PRODUCT_DATABASE_URL is set but empty"),
])
def test_malformed_url_is_one_line_naming_the_variable(value, fragment):
    with pytest.raises(ConfigError) as info:
        load_settings(env={"PRODUCT_DATABASE_URL": value})
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_file_variant_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"PRODUCT_DATABASE_URL_FILE points at .* cannot be read"):
        load_settings(env={"PRODUCT_DATABASE_URL_FILE": str(tmp_path / "missing")})
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match=r"PRODUCT_DATABASE_URL_FILE points at .* which is empty"):
        load_settings(env={"PRODUCT_DATABASE_URL_FILE": str(empty)})
    with pytest.raises(ConfigError, match="both set"):
        load_settings(env={"PRODUCT_DATABASE_URL_FILE": str(empty), "PRODUCT_DATABASE_URL": P})


def test_malformed_url_in_a_file_names_the_file_variable(tmp_path):
    bad = tmp_path / "bad"
    bad.write_text("nonsense")
    with pytest.raises(ConfigError, match="MARKETPLACE_DATABASE_URL_FILE is not a valid database URL"):
        load_settings(env={"MARKETPLACE_DATABASE_URL_FILE": str(bad)})


@pytest.mark.parametrize(("text", "fragment"), [
    ("[reconcile]\nmax_archive = 'many'\n", "reconcile.max_archive must be an integer"),
    ("[reconcile]\nmax_archive_ratio = 2.0\n", "reconcile.max_archive_ratio must be between"),
    ("[reconcile]\norphans = 'delete'\n", "reconcile.orphans must be one of report, archive"),
    ("[reconcile]\nmax_archve = 3\n", "unknown setting reconcile.max_archve"),
    ("[reconcilee]\n", "unknown table [reconcilee]"),
    ("[inbound]\ncountries = ['FRA']\n", "not a two-letter country code"),
    ("[mapping.plan]\ngold = ' PRO'\n", "mapping.plan.gold must be a marketplace label"),
    ("this is = not toml [", "is not valid TOML"),
])
def test_bad_config_file_is_one_line_naming_the_key(tmp_path, text, fragment):
    cfg = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(config_file=cfg, env={})
    assert fragment in str(info.value)
    assert cfg in str(info.value) or "mapping" in fragment
    assert "\n" not in str(info.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(config_file=str(tmp_path / "nope.toml"), env={})


def test_bad_env_value_names_the_variable():
    with pytest.raises(ConfigError, match="RECONCILE_MAX_ARCHIVE must be an integer"):
        load_settings(env={"RECONCILE_MAX_ARCHIVE": "lots"})


def test_shipped_default_config_equals_the_built_in_defaults():
    path = REPO / "config" / "reconcile.toml"
    tomllib.loads(path.read_text())  # parses
    from_file = load_settings(config_file=str(path), env={})
    assert dataclasses.replace(from_file, config_file=None) == Settings()
    assert from_file.mapping == Mapping()


@pytest.mark.parametrize(("flag", "env", "expected"), [
    ("2/4", {}, Shard(2, 4)),
    (None, {"JOB_COMPLETION_INDEX": "3", "RECONCILE_SHARD_COUNT": "4"}, Shard(3, 4)),
    ("1/2", {"JOB_COMPLETION_INDEX": "3", "RECONCILE_SHARD_COUNT": "4"}, Shard(1, 2)),
])
def test_shard_from_flag_or_indexed_job_env(flag, env, expected):
    assert load_settings(env=env, flags={"shard": flag}).shard == expected


@pytest.mark.parametrize(("flag", "env", "fragment"), [
    ("4/4", {}, "--shard: shard index must be between 0 and 3"),
    ("x", {}, "--shard must look like I/N"),
    ("0/0", {}, "shard count must be between"),
    (None, {"JOB_COMPLETION_INDEX": "2"}, "RECONCILE_SHARD_COUNT is not"),
    (None, {"JOB_COMPLETION_INDEX": "5", "RECONCILE_SHARD_COUNT": "4"}, "JOB_COMPLETION_INDEX"),
])
def test_bad_shard_is_a_config_error(flag, env, fragment):
    with pytest.raises(ConfigError) as info:
        load_settings(env=env, flags={"shard": flag})
    assert fragment in str(info.value)


def test_example_env_names_only_variables_the_program_reads():
    text = (REPO / "config" / "example.env").read_text()
    names = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", text, re.M))
    source = "".join(p.read_text() for d in ("reconcile", "jobs") for p in (REPO / d).rglob("*.py"))
    assert len(names) > 20
    unread = sorted(n for n in names if n not in source and n.removesuffix("_FILE") not in source)
    assert unread == []


# -- which source gave each URL ---------------------------------------------------------------------

def test_url_sources_are_named_for_the_start_event(tmp_path):
    secret = tmp_path / "url"
    secret.write_text(M)
    cfg = write(tmp_path, f'[database]\nproduct_url = "{P}"\nmarketplace_url = "{M}"\n')
    s = load_settings(config_file=cfg, env={})
    assert (s.product_from, s.marketplace_from) == (f"config file {cfg}: database.product_url",
                                                    f"config file {cfg}: database.marketplace_url")
    s = load_settings(config_file=cfg, env={"PRODUCT_DATABASE_URL": P, "MARKETPLACE_DATABASE_URL_FILE": str(secret)})
    assert (s.product_from, s.marketplace_from) == ("PRODUCT_DATABASE_URL", "MARKETPLACE_DATABASE_URL_FILE")
    s = load_settings(config_file=cfg, env={"DATABASE_URL": M}, flags={"product_url": P})
    assert (s.product_from, s.marketplace_from) == ("--product-url", "DATABASE_URL")
    s = load_settings(env={"PRODUCT_DATABASE_URL_FILE": str(secret)}, flags={"marketplace_url": M},
                      url_flags=("--product", "--marketplace"))
    assert (s.product_from, s.marketplace_from) == ("PRODUCT_DATABASE_URL_FILE", "--marketplace")
    assert load_settings(env={}).product_from is None


# -- DATABASE_URL: the marketplace's own variable ----------------------------------------------------

def test_marketplace_url_falls_back_to_database_url(tmp_path):
    s = load_settings(env={"DATABASE_URL": M})
    assert (s.require_marketplace().display, s.marketplace_from) == ("m-host:5433/keybuzz_backend", "DATABASE_URL")
    secret = tmp_path / "db-url"
    secret.write_text(M + "\n")
    s = load_settings(env={"DATABASE_URL_FILE": str(secret)})
    assert (s.require_marketplace().display, s.marketplace_from) == ("m-host:5433/keybuzz_backend",
                                                                     "DATABASE_URL_FILE")


def test_marketplace_variables_beat_database_url_and_database_url_beats_the_config_file(tmp_path):
    other = "postgresql://u@other:5432/elsewhere"
    secret = tmp_path / "url"
    secret.write_text(M)
    assert load_settings(env={"DATABASE_URL": other, "MARKETPLACE_DATABASE_URL": M}).marketplace_from == (
        "MARKETPLACE_DATABASE_URL")
    assert load_settings(env={"DATABASE_URL": other, "MARKETPLACE_DATABASE_URL_FILE": str(secret)}
                         ).marketplace_from == "MARKETPLACE_DATABASE_URL_FILE"
    assert load_settings(env={"DATABASE_URL": other}, flags={"marketplace_url": M}).marketplace_from == (
        "--marketplace-url")
    cfg = write(tmp_path, f'[database]\nmarketplace_url = "{other}"\n')
    s = load_settings(config_file=cfg, env={"DATABASE_URL": M})  # an environment variable beats the file
    assert (s.require_marketplace().display, s.marketplace_from) == ("m-host:5433/keybuzz_backend", "DATABASE_URL")


def test_database_url_is_never_read_for_the_product():
    s = load_settings(env={"DATABASE_URL": M})
    assert s.product_url is None
    with pytest.raises(ConfigError, match="PRODUCT_DATABASE_URL is not set"):
        s.require_product()


def test_database_url_and_its_file_variant_both_set_is_an_error(tmp_path):
    secret = tmp_path / "url"
    secret.write_text(M)
    with pytest.raises(ConfigError, match="DATABASE_URL and DATABASE_URL_FILE are both set"):
        load_settings(env={"DATABASE_URL": M, "DATABASE_URL_FILE": str(secret)})
    # not read at all when MARKETPLACE_DATABASE_URL is set: its state does not matter then
    assert load_settings(env={"DATABASE_URL": M, "DATABASE_URL_FILE": str(secret),
                              "MARKETPLACE_DATABASE_URL": M}).marketplace_from == "MARKETPLACE_DATABASE_URL"


def test_database_url_naming_the_product_database_is_refused():
    with pytest.raises(ConfigError, match="DATABASE_URL names the product database p-host:5432/keybuzz") as info:
        load_settings(env={"PRODUCT_DATABASE_URL": P, "DATABASE_URL": P.replace("u@", "other:pw@")})
    assert "MARKETPLACE_DATABASE_URL" in str(info.value) and "pw" not in str(info.value)


def test_missing_marketplace_url_mentions_database_url():
    with pytest.raises(ConfigError, match="nor MARKETPLACE_DATABASE_URL_FILE, DATABASE_URL, --marketplace-url"):
        load_settings(env={}).require_marketplace()


# -- Prisma-style URLs -------------------------------------------------------------------------------

def test_prisma_only_query_parameters_are_dropped_and_schema_is_kept_as_search_path():
    url = (f"{M}?schema=tenants_v2&connection_limit=5&pool_timeout=10&pgbouncer=true&socket_timeout=3"
           "&statement_cache_size=0&sslaccept=strict&sslmode=require&application_name=x")
    db = load_settings(env={"MARKETPLACE_DATABASE_URL": url}).require_marketplace()
    assert db.search_path == "tenants_v2"
    assert dict(db.url.query) == {"sslmode": "require", "application_name": "x"}  # libpq's own options stay
    assert load_settings(env={"MARKETPLACE_DATABASE_URL": M}).require_marketplace().search_path is None


@pytest.mark.parametrize("schema", ["", "a%20b", "a;drop", "1abc", "a.b", '"x"', "x" * 64])
def test_prisma_schema_must_be_a_plain_name(schema):
    with pytest.raises(ConfigError, match="MARKETPLACE_DATABASE_URL: schema= must be a plain schema name"):
        load_settings(env={"MARKETPLACE_DATABASE_URL": f"{M}?schema={schema}"})


def test_prisma_schema_given_twice_is_an_error():
    with pytest.raises(ConfigError, match="schema= is given more than once"):
        load_settings(env={"MARKETPLACE_DATABASE_URL": f"{M}?schema=a&schema=b"})


def test_other_libpq_options_are_still_checked_after_prisma_ones_are_dropped():
    with pytest.raises(ConfigError, match='invalid URI query parameter: "bogusopt"'):
        load_settings(env={"MARKETPLACE_DATABASE_URL": f"{M}?schema=public&bogusopt=1"})


# -- URLs that cannot be read unambiguously, and no fragment of a password in any error ---------------

PASSWORD = "p@ssW0rd#S3cr3t/x"
FRAGMENTS = ("ssW0rd", "S3cr3t", "W0rd#", "3cr3t/", "p@ss", "W0rd")


def assert_no_fragment(text: str, password: str = PASSWORD, fragments: tuple[str, ...] = FRAGMENTS) -> None:
    for fragment in (*fragments, *(password[i:i + 4] for i in range(len(password) - 3))):
        assert fragment not in text, (fragment, text)


@pytest.mark.parametrize("url", [
    "postgresql://u:p@ss@host/db",
    "postgresql://u:pa/ss@host/db",
    "postgresql://u:pa#ss@host/db",
    "postgresql://u:pa?ss@host/db",
    "postgresql://u:pa?s=s@host/db",
    "postgresql://u:p@ss/x@host/db",
    "postgresql://us@er:pazz@host/db",
    f"postgresql://reconcile:{PASSWORD}@host:5432/keybuzz",
    f"postgresql://reconcile:{PASSWORD}@host:5432/keybuzz?sslmode=require",
])
def test_unencoded_at_slash_question_mark_or_hash_in_credentials_is_refused(url):
    with pytest.raises(ConfigError) as info:
        load_settings(env={"PRODUCT_DATABASE_URL": url})
    message = str(info.value)
    assert message.startswith("PRODUCT_DATABASE_URL cannot be read unambiguously")
    assert "%40 %2F %3F %23" in message and "\n" not in message
    rest = url.partition("://")[2]
    assert not [rest[i:i + 4] for i in range(len(rest) - 3) if rest[i:i + 4] in message]  # no part of the URL
    assert_no_fragment(message)


def test_ambiguous_url_from_a_file_variable_flag_or_config_file_names_its_source(tmp_path):
    url = f"postgresql://reconcile:{PASSWORD}@host:5432/keybuzz"
    secret = tmp_path / "url"
    secret.write_text(url + "\n")
    cfg = write(tmp_path, f'[database]\nmarketplace_url = "{url}"\n')
    for kwargs, name in (({"env": {"MARKETPLACE_DATABASE_URL_FILE": str(secret)}}, "MARKETPLACE_DATABASE_URL_FILE"),
                         ({"env": {"DATABASE_URL_FILE": str(secret)}}, "DATABASE_URL_FILE"),
                         ({"env": {}, "flags": {"marketplace_url": url}}, "--marketplace-url"),
                         ({"env": {}, "config_file": cfg}, f"config file {cfg}: database.marketplace_url")):
        with pytest.raises(ConfigError) as info:
            load_settings(**kwargs)
        assert str(info.value).startswith(f"{name} cannot be read unambiguously")
        assert_no_fragment(str(info.value))


def test_percent_encoded_credentials_are_accepted():
    encoded = "p%40ssW0rd%23S3cr3t%2Fx"
    db = load_settings(env={"PRODUCT_DATABASE_URL": f"postgresql://reconcile:{encoded}@host:5432/keybuzz"}
                       ).require_product()
    assert db.url.password == PASSWORD and db.display == "host:5432/keybuzz"
    assert_no_fragment(repr(db) + str(db))


@pytest.mark.parametrize("url", [
    # libpq's own messages quote what they reject; none of them may carry a piece of the password
    f"postgresql://reconcile:{PASSWORD.replace('@', '%40').replace('#', '%23').replace('/', '%2F')}"
    "@host/db?ssW0rd=1",
    "postgresql://reconcile@host/db?password=ssW0rd%23S3cr3t&bogus=ssW0rd",
    "postgresql://reconcile@host/db?password=p%40ssW0rd%23S3cr3t%2Fx&sslmode=S3cr3t",
    "postgresql://reconcile@host/db?password=p%40ssW0rd%23S3cr3t%2Fx&sslmode=p%40ssW0rd",
    "postgresql://reconcile:p%40ssW0rd%23S3cr3t%2Fx@host:99999999/db",
    "postgresql://reconcile:p%40ssW0rd%23S3cr3t%2Fx@host:0/db",
    "postgresql://reconcile:p%40ssW0rd%23S3cr3t%2Fx@host:ssW0rd/db",
    "postgresql://reconcile:p%40ssW0rd%23S3cr3t%2Fx@host/db?schema=ssW0rd%23S3cr3t",
    "mysql://reconcile:p%40ssW0rd%23S3cr3t%2Fx@host/db",
    "postgresql://reconcile:p%40ssW0rd%23S3cr3t%2Fx@host",
])
def test_no_url_error_shows_any_fragment_of_a_password(url):
    with pytest.raises(ConfigError) as info:
        load_settings(env={"PRODUCT_DATABASE_URL": url})
    assert str(info.value).startswith("PRODUCT_DATABASE_URL")
    assert_no_fragment(str(info.value))


# -- new settings ------------------------------------------------------------------------------------

def test_network_timeout_from_env_or_config_file_and_positive(tmp_path):
    assert Settings().network_timeout_s == 30.0
    cfg = write(tmp_path, "[database]\nnetwork_timeout_s = 12.5\n")
    assert load_settings(config_file=cfg, env={}).network_timeout_s == 12.5
    assert load_settings(config_file=cfg, env={"RECONCILE_NETWORK_TIMEOUT": "7"}).network_timeout_s == 7.0
    for bad in ("0", "-1", "soon", "nan"):
        with pytest.raises(ConfigError, match="RECONCILE_NETWORK_TIMEOUT must be"):
            load_settings(env={"RECONCILE_NETWORK_TIMEOUT": bad})


def test_skip_ids_from_flag_env_or_config_file_list(tmp_path):
    assert Settings().skip_ids == ()
    cfg = write(tmp_path, '[reconcile]\nskip_ids = ["kbz-bad", " kbz,odd ", ""]\n')
    assert load_settings(config_file=cfg, env={}).skip_ids == ("kbz-bad", "kbz,odd")
    env = {"RECONCILE_SKIP_IDS": " a, b ,,a,c "}
    assert load_settings(config_file=cfg, env=env).skip_ids == ("a", "b", "c")   # env replaces the file
    assert load_settings(config_file=cfg, env=env, flags={"skip_ids": "z"}).skip_ids == ("z",)  # flag replaces


@pytest.mark.parametrize(("text", "fragment"), [
    ("[reconcile]\nskip_ids = [1, 2]\n", "reconcile.skip_ids must be a list of tenant ids"),
    ("[reconcile]\nskip_ids = 3\n", "reconcile.skip_ids must be a list of tenant ids"),
])
def test_bad_skip_ids_in_the_config_file(tmp_path, text, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        load_settings(config_file=write(tmp_path, text), env={})


def test_allow_empty_source_is_a_flag_only(tmp_path):
    assert Settings().allow_empty_source is False
    assert load_settings(env={}, flags={"allow_empty_source": True}).allow_empty_source is True
    assert load_settings(env={"RECONCILE_ALLOW_EMPTY_SOURCE": "true"}).allow_empty_source is False
    cfg = write(tmp_path, "[reconcile]\nallow_empty_source = true\n")
    with pytest.raises(ConfigError, match="allow_empty_source is a command-line flag only"):
        load_settings(config_file=cfg, env={})


def test_max_archive_ratio_flag_beats_env_and_is_checked():
    env = {"RECONCILE_MAX_ARCHIVE_RATIO": "0.3"}
    assert load_settings(env=env, flags={"max_archive_ratio": 0.5}).max_archive_ratio == 0.5
    with pytest.raises(ConfigError, match=re.escape("--max-archive-ratio must be between 0.0 and 1.0")):
        load_settings(env=env, flags={"max_archive_ratio": 1.5})


# -- the Pushgateway URL -----------------------------------------------------------------------------

def test_pushgateway_url_is_validated_and_shown_without_credentials(tmp_path):
    s = load_settings(env={"RECONCILE_PUSHGATEWAY_URL": "http://user:S3cr3t@gw.example:9091"})
    gw = s.pushgateway
    assert gw is not None
    assert (gw.display, gw.url, gw.username, gw.password) == (
        "http://gw.example:9091", "http://gw.example:9091", "user", "S3cr3t")
    assert "S3cr3t" not in repr(s) and "S3cr3t" not in str(gw)
    assert load_settings(env={}, flags={"pushgateway": "https://gw.example"}).pushgateway.display == (
        "https://gw.example:443")
    cfg = write(tmp_path, '[metrics]\npushgateway = "http://gw:9091/prefix/"\n')
    assert load_settings(config_file=cfg, env={}).pushgateway.url == "http://gw:9091/prefix"
    encoded = load_settings(env={"RECONCILE_PUSHGATEWAY_URL": "http://us%40er:p%2Fw%40rd@gw:9091"}).pushgateway
    assert (encoded.username, encoded.password) == ("us@er", "p/w@rd")


@pytest.mark.parametrize("url", [
    "ftp://user:S3cr3tPass@pgw-host:9091",
    "pgw-host:9091",
    "http://user:S3cr3tPass@:9091",
    "http://user:S3cr3tPass@pgw-host:nonport",
    "http://user:S3cr3tPass@pgw-host:99999",
    "http://user:S3cr3tPass@pgw-host:0",
    "http://user:S3cr3tPass@pgw-host:9091?x=1",
    "http://user:S3cr3tPass@pgw-host:9091#zzfragzz",
    "http://user:S3cr@tPass@pgw-host:9091",
    "http://user:S3cr3t/Pass@pgw-host:9091",
    "http://user:S3cr3t?Pass@pgw-host:9091",
    "http://user:S3cr3t#Pass@pgw-host:9091",
    "http://user:S3cr3tPass@[pgw-host:9091",
])
def test_bad_pushgateway_url_names_the_setting_without_echoing_it(tmp_path, url):
    cfg = write(tmp_path, f'[metrics]\npushgateway = "{url}"\n')
    for kwargs, name in (({"env": {"RECONCILE_PUSHGATEWAY_URL": url}}, "RECONCILE_PUSHGATEWAY_URL"),
                         ({"env": {}, "flags": {"pushgateway": url}}, "--pushgateway"),
                         ({"env": {}, "config_file": cfg}, "metrics.pushgateway")):
        with pytest.raises(ConfigError) as info:
            load_settings(**kwargs)
        message = str(info.value)
        assert name in message and "\n" not in message
        for fragment in ("S3cr", "3cr3", "tPass", "pgw-host", "9091", "nonport", "zzfrag"):
            assert fragment not in message.split(name, 1)[1], (fragment, message)


_PASSWORD_CHARS = "QXZJKVW0123456789@/?#:%&=[]!$*+"
_SHAPES = (
    "postgresql://reconcile:{pw}@host:5432/keybuzz",
    "postgresql://reconcile:{pw}@host/keybuzz?sslmode=require",
    "postgresql://reconcile:{pw}@host:5432/keybuzz?schema=public&connection_limit=3",
    "postgresql://reconcile:{pw}@host",
    "postgresql://reconcile:{pw}@host:5432/keybuzz?application_name=x&sslmode=bogus",
    "postgresql://reconcile@host/keybuzz?password={pw}&bogusopt=1",
    "postgresql://reconcile@host/keybuzz?password={pw}&sslmode={pw}",
    "postgresql://{pw}@host/keybuzz",
    "mysql://reconcile:{pw}@host/keybuzz",
    "reconcile:{pw}@host/keybuzz",
)


@settings(max_examples=200, deadline=None)
@given(password=st.text(st.sampled_from(_PASSWORD_CHARS), min_size=4, max_size=16), shape=st.sampled_from(_SHAPES))
# A password in the query holding '&' and '=': libpq quoted the "parameter" it made of the rest.
@example(password="&0000=0", shape="postgresql://reconcile@host/keybuzz?password={pw}&bogusopt=1")
def test_no_url_error_shows_a_piece_of_the_password_whatever_the_shape(password, shape):
    url = shape.format(pw=password)
    try:
        db = load_settings(env={"PRODUCT_DATABASE_URL": url}).require_product()
    except ConfigError as exc:
        shown = str(exc).replace("PRODUCT_DATABASE_URL", "")
    else:
        shown = f"{db} {db!r}"
    pieces = {password[i:i + 4] for i in range(len(password) - 3)}
    assert not [p for p in pieces if p in shown], (url, shown)


# -- the metrics port of `schedule` ------------------------------------------------------------------

def test_the_metrics_port_is_off_by_default_and_follows_flag_env_file(tmp_path):
    assert load_settings(env={}).metrics_port is None
    cfg = write(tmp_path, '[metrics]\nport = 9100\nhost = "::"\n')
    assert (load_settings(config_file=cfg, env={}).metrics_port, load_settings(config_file=cfg, env={}).metrics_host) \
        == (9100, "::")
    env = {"RECONCILE_METRICS_PORT": "9200", "RECONCILE_METRICS_HOST": "127.0.0.1"}
    assert load_settings(config_file=cfg, env=env).metrics_port == 9200
    assert load_settings(config_file=cfg, env=env, flags={"metrics_port": "9300"}).metrics_port == 9300
    assert load_settings(config_file=cfg, env=env, flags={"metrics_host": "localhost"}).metrics_host == "localhost"


@pytest.mark.parametrize(("variable", "value"), [
    ("RECONCILE_NETWORK_TIMEOUT", "inf"), ("RECONCILE_NETWORK_TIMEOUT", "1e300"), ("RECONCILE_WAIT_LOCK", "inf"),
    ("RECONCILE_CONNECT_TIMEOUT", "99999999999"), ("RECONCILE_STATEMENT_TIMEOUT_MS", "99999999999"),
    ("RECONCILE_LOCK_TIMEOUT_MS", "99999999999"), ("RECONCILE_CONNECT_RETRY", "nan"),
    ("RECONCILE_STOP_GRACE", "-inf"), ("RECONCILE_POLL_INTERVAL", "inf"), ("RECONCILE_MISFIRE_GRACE", "99999999999"),
])
def test_a_duration_that_is_infinite_or_beyond_what_the_driver_takes_is_a_config_error_naming_it(variable, value):
    with pytest.raises(ConfigError) as info:
        load_settings(env={variable: value})
    assert variable in str(info.value) and "\n" not in str(info.value)


def test_an_infinite_duration_in_the_config_file_is_a_config_error_naming_the_key(tmp_path):
    cfg = write(tmp_path, "[database]\nnetwork_timeout_s = inf\n")
    with pytest.raises(ConfigError, match=r"database\.network_timeout_s"):
        load_settings(env={}, config_file=cfg)


def test_a_config_file_that_is_not_utf8_is_a_config_error_naming_the_file(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('[inbound]\ndomain = "caf\xe9.example"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8") as info:
        load_settings(env={}, config_file=str(path))
    assert str(path) in str(info.value)
