"""Settings precedence (flag > env > file; URLs: flag > file > env), *_FILE secrets, one-line errors."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest

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


def test_connection_urls_come_from_the_environment_and_the_config_file_and_flags_override(tmp_path):
    cfg = write(tmp_path, f'[database]\nproduct_url = "{M}"\n')
    env = {"PRODUCT_DATABASE_URL": P, "MARKETPLACE_DATABASE_URL": P}
    s = load_settings(config_file=cfg, env=env)
    assert s.require_product().display == "m-host:5433/keybuzz_backend"  # the file overrides the env
    assert s.require_marketplace().display == "p-host:5432/keybuzz"    # not in the file: the env
    s = load_settings(config_file=cfg, env=env, flags={"product_url": P})
    assert s.require_product().display == "p-host:5432/keybuzz"        # the flag overrides both


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
    ("[mapping.plan]\ngold = 'PLATINUM'\n", "mapping.plan.gold must be one of"),
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
    source = "".join(p.read_text() for d in ("reconcile", "jobs") for p in (REPO / d).glob("*.py"))
    assert len(names) > 20
    unread = sorted(n for n in names if n not in source and n.removesuffix("_FILE") not in source)
    assert unread == []
