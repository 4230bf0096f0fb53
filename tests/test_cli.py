"""The CLI as an operator meets it: real subprocesses, exit codes, stdout/stderr contracts, redaction."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.pgtools import REPO, run_cli

SECRET = "s3cr3t-Pa55word"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bare_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RECONCILE_", "PRODUCT_DATABASE", "MARKETPLACE_DATABASE", "JOB_COMPLETION"))}
    env.update(extra)
    return env


def assert_no_traceback(result) -> None:
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout


def test_run_success_exit_0_json_lines_only(dbs):
    dbs.add_product(("a", "A", "pro", "active"))
    result = run_cli("run", env=dbs.env())
    assert result.code == 0, result.stderr
    assert result.report["status"] == "success"
    assert all(isinstance(e, dict) for e in result.events)  # every stdout line is JSON
    assert result.stderr == ""


def test_plan_is_a_dry_run(dbs):
    dbs.add_product(("a", "A", "pro", "active"))
    result = run_cli("plan", env=dbs.env())
    assert result.code == 0
    assert result.report["mode"] == "dry-run" and result.report["created"] == ["a"]
    assert dbs.market() == {}
    result = run_cli("run", "--dry-run", env=dbs.env())
    assert result.report["mode"] == "dry-run" and dbs.market() == {}


def test_nothing_to_do_is_success(dbs):
    result = run_cli("run", env=dbs.env())
    assert result.code == 0 and result.report["total"] == 0


def test_partial_exits_3(dbs):
    dbs.add_product(("a", "A", "gold", "active"), ("b", "B", "pro", "active"))
    result = run_cli("run", env=dbs.env())
    assert result.code == 3
    assert result.report["status"] == "partial" and result.report["created"] == ["b"]
    assert [e["tenant_id"] for e in result.of("tenant.error")] == ["a"]


@pytest.mark.parametrize("missing", ["PRODUCT_DATABASE_URL", "MARKETPLACE_DATABASE_URL"])
def test_missing_variable_exit_2_one_line_naming_it(missing):
    env = bare_env(PRODUCT_DATABASE_URL="postgresql://u@h/p", MARKETPLACE_DATABASE_URL="postgresql://u@h/m")
    del env[missing]
    result = run_cli("run", env=env)
    assert result.code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and missing in lines[0]
    assert_no_traceback(result)


def test_malformed_url_exit_2_names_the_variable_and_hides_the_password():
    env = bare_env(PRODUCT_DATABASE_URL=f"postgresql://u:{SECRET}@h:99999999/p",
                   MARKETPLACE_DATABASE_URL="postgresql://u@h/m")
    result = run_cli("plan", env=env)
    assert result.code == 2
    assert "PRODUCT_DATABASE_URL" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert SECRET not in result.stderr + result.stdout


def test_bad_config_file_exit_2(tmp_path, dbs):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[reconcile]\nmax_archive = 'lots'\n")
    result = run_cli("run", "--config", str(cfg), env=dbs.env())
    assert result.code == 2
    assert "reconcile.max_archive" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert_no_traceback(result)


def test_usage_error_exit_2(dbs):
    assert run_cli("run", "--orphans", "delete", env=dbs.env()).code == 2
    assert run_cli("frobnicate", env=dbs.env()).code == 2


def test_unreachable_database_exit_7_with_report_and_no_secret(dbs):
    port = closed_port()
    env = dbs.env(MARKETPLACE_DATABASE_URL=f"postgresql://reconcile:{SECRET}@127.0.0.1:{port}/keybuzz_backend")
    result = run_cli("run", env=env)
    assert result.code == 7
    report = result.report
    assert report["status"] == "failed"
    assert f"127.0.0.1:{port}/keybuzz_backend" in report["error"]
    assert report["target"]["db"] == f"127.0.0.1:{port}/keybuzz_backend"
    assert SECRET not in result.stdout + result.stderr
    assert_no_traceback(result)


def test_unknown_database_host_exit_7(dbs):
    env = dbs.env(PRODUCT_DATABASE_URL=f"postgresql://u:{SECRET}@no-such-host.invalid:5432/keybuzz")
    result = run_cli("run", env=env)
    assert result.code == 7 and result.report["status"] == "failed"
    assert SECRET not in result.stdout + result.stderr
    assert_no_traceback(result)


def test_transaction_failure_exit_7_and_rollback(dbs):
    dbs.add_product(("a", "A", "pro", "active"), ("b", "B", "pro", "active"))
    dbs.sql("marketplace", """
        CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.id = 'b' THEN RAISE EXCEPTION 'no b'; END IF; RETURN NEW; END $$;
        CREATE TRIGGER boom BEFORE INSERT ON "Tenant" FOR EACH ROW EXECUTE FUNCTION boom();""")
    result = run_cli("run", env=dbs.env())
    assert result.code == 7 and result.report["status"] == "failed"
    assert dbs.market() == {}
    assert_no_traceback(result)


def test_report_file_is_written_and_matches_stdout(dbs, tmp_path):
    dbs.add_product(("a", "A", "pro", "active"))
    path = tmp_path / "out" / "report.json"
    result = run_cli("run", "--report-file", str(path), env=dbs.env())
    assert result.code == 0
    on_disk = json.loads(path.read_text())
    on_stdout = result.report
    for key in ("run_id", "status", "counts", "created", "source", "target", "mode"):
        assert on_disk[key] == on_stdout[key]
    assert [p.name for p in path.parent.iterdir()] == ["report.json"]  # no temp file left behind
    assert on_disk["event"] == "reconcile.report" and on_disk["level"] == on_stdout["level"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", on_disk["timestamp"])
    assert path.stat().st_mode & 0o777 == 0o666 & ~current_umask()  # not mkstemp's 0600


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("where", ["is-a-file/report.json", "a-directory"])
def test_unusable_report_file_is_a_config_error_before_the_run(dbs, tmp_path, where):
    dbs.add_product(("a", "A", "pro", "active"))
    (tmp_path / "is-a-file").write_text("")
    (tmp_path / "a-directory").mkdir()
    result = run_cli("run", "--report-file", str(tmp_path / where), env=dbs.env())
    assert result.code == 2 and result.stdout == ""
    assert "--report-file" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert dbs.market() == {}  # refused before anything ran


def test_report_file_is_written_for_a_failed_run(tmp_path):
    path = tmp_path / "report.json"
    env = bare_env(PRODUCT_DATABASE_URL=f"postgresql://u@127.0.0.1:{closed_port()}/p",
                   MARKETPLACE_DATABASE_URL=f"postgresql://u@127.0.0.1:{closed_port()}/m",
                   RECONCILE_CONNECT_RETRY="0")
    result = run_cli("run", "--report-file", str(path), env=env)
    assert result.code == 7
    assert json.loads(path.read_text())["status"] == "failed"


def test_console_format_is_for_humans(dbs):
    dbs.add_product(("a", "A", "pro", "active"))
    result = run_cli("run", "--log-format", "console", env=dbs.env())
    assert result.code == 0
    assert "\nPlan: 1 to create" in result.stdout and "\nStatus: success" in result.stdout  # the report's block
    with pytest.raises(json.JSONDecodeError):
        json.loads(result.stdout.splitlines()[-1])


def test_ecs_format_uses_elastic_common_schema_names(dbs):
    dbs.add_product(("a", "A", "pro", "active"), ("b", "B", "gold", "active"))
    result = run_cli("run", "--log-format", "ecs", env=dbs.env())
    assert result.code == 3
    events = result.events
    report = next(e for e in events if e["event.action"] == "reconcile.report")
    for key in ("@timestamp", "log.level", "message", "event.action", "event.outcome", "event.duration",
                "ecs.version"):
        assert key in report, key
    assert report["event.outcome"] == "failure" and isinstance(report["event.duration"], int)
    created = next(e for e in events if e["event.action"] == "tenant.created")
    assert created["event.outcome"] == "success" and created["tenant_id"] == "a"
    assert "event" not in report and "level" not in report


def test_ecs_fields_keep_one_type_in_every_event(dbs):
    """Elasticsearch maps a field once per index: `source` and `target` are objects in the report,
    so they are objects in every event (reconcile.start names the databases as text otherwise)."""
    dbs.add_product(("a", "A", "pro", "active"))
    result = run_cli("run", "--log-format", "ecs", env=dbs.env())
    assert result.code == 0, result.stderr
    for event in result.events:
        for key in ("source", "target"):
            assert not isinstance(event.get(key), str), (event["event.action"], key, event[key])
    start = next(e for e in result.events if e["event.action"] == "reconcile.start")
    assert start["source"] == {"name": dbs.product.display}


def test_log_format_from_environment(dbs):
    result = run_cli("plan", env=dbs.env(RECONCILE_LOG_FORMAT="ecs"))
    assert "@timestamp" in result.events[-1]


def test_urls_from_file_variables(dbs, tmp_path):
    (tmp_path / "p").write_text(dbs.product_url)
    (tmp_path / "m").write_text(dbs.marketplace_url)
    env = dbs.env()
    del env["PRODUCT_DATABASE_URL"], env["MARKETPLACE_DATABASE_URL"]
    env.update(PRODUCT_DATABASE_URL_FILE=str(tmp_path / "p"), MARKETPLACE_DATABASE_URL_FILE=str(tmp_path / "m"))
    assert run_cli("plan", env=env).code == 0


def test_url_flags_override_environment(dbs):
    env = dbs.env(PRODUCT_DATABASE_URL=f"postgresql://u@127.0.0.1:{closed_port()}/nope")
    result = run_cli("plan", "--product-url", dbs.product_url, env=env)
    assert result.code == 0, result.stdout


@pytest.mark.parametrize("command", ["run", "plan", "init-db", "demo"])
def test_every_command_has_help(command):
    result = run_cli(command, "--help", env=bare_env())
    assert result.code == 0 and "Usage:" in result.stdout


def test_top_level_help_lists_commands_and_exit_codes():
    result = run_cli("--help", env=bare_env())
    assert result.code == 0
    for word in ("run", "plan", "init-db", "demo", "Exit codes"):
        assert word in result.stdout


def test_console_script_is_installed():
    script = shutil.which("tenant-reconcile") or str(Path(sys.executable).parent / "tenant-reconcile")
    proc = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "version" in proc.stdout


def test_init_db_is_idempotent_and_creates_missing_databases(pg_server):
    tag = f"rc_init_{int(time.time() * 1000) % 10**9}"
    product = pg_server.url_for(f"{tag}_p")
    market = pg_server.url_for(f"{tag}_m")
    from tests.pgtools import url_text

    try:
        for _ in range(2):
            result = run_cli("init-db", "--product", url_text(product), "--marketplace", url_text(market),
                             env=bare_env())
            assert result.code == 0, result.stderr
        done = [e["database_created"] for e in result.events if e["event"] == "init_db.done"]
        assert done == [False, False]
        env = bare_env(PRODUCT_DATABASE_URL=url_text(product), MARKETPLACE_DATABASE_URL=url_text(market))
        assert run_cli("run", env=env).code == 0
    finally:
        pg_server.drop_database(f"{tag}_p")
        pg_server.drop_database(f"{tag}_m")


def test_urls_as_the_deployment_has_them_url_flags_of_init_db_and_a_prisma_database_url(pg_server):
    """init-db takes --product-url/--marketplace-url; then run and check find the marketplace through
    DATABASE_URL alone, in keybuzz-backend's Prisma form: Prisma's parameters dropped, schema= the
    search_path (here a schema that is not public, so a wrong search_path would find no table)."""
    import sqlalchemy as sa

    from reconcile.db.engines import engine_for
    from tests.pgtools import url_text

    tag = f"rc_prisma_{int(time.time() * 1000) % 10**9}"
    pg_server.create_database(f"{tag}_p")
    pg_server.create_database(f"{tag}_m")
    product, market = pg_server.url_for(f"{tag}_p"), pg_server.url_for(f"{tag}_m")
    engines = [engine_for(product), engine_for(market)]
    try:
        with engines[1].begin() as conn:
            conn.exec_driver_sql("CREATE SCHEMA backend")
        prisma = url_text(market) + "?schema=backend&connection_limit=5&pool_timeout=10&pgbouncer=true"
        result = run_cli("init-db", "--product-url", url_text(product), "--marketplace-url", prisma, env=bare_env())
        assert result.code == 0, result.stderr
        with engines[1].connect() as conn:
            tables = conn.execute(sa.text("SELECT table_schema FROM information_schema.tables "
                                          "WHERE table_name = 'Tenant'")).scalars().all()
        assert tables == ["backend"]
        with engines[0].begin() as conn:
            conn.exec_driver_sql("INSERT INTO tenants (id, name, plan, status) "
                                 "VALUES ('kbz-1', 'One', 'pro', 'active')")

        env = bare_env(PRODUCT_DATABASE_URL=url_text(product), DATABASE_URL=prisma)
        result = run_cli("run", env=env)
        assert result.code == 0, result.stdout + result.stderr
        start = result.of("reconcile.start")[0]
        assert (start["product_from"], start["marketplace_from"]) == ("PRODUCT_DATABASE_URL", "DATABASE_URL")
        assert result.report["created"] == ["kbz-1"] and result.report["target"]["db"] == market.display
        with engines[1].connect() as conn:
            plan = conn.execute(sa.text('SELECT plan::text FROM backend."Tenant" WHERE id = :id'), {"id": "kbz-1"})
            assert plan.scalar() == "PRO"

        result = run_cli("check", env=env)
        assert result.code == 0, result.stdout + result.stderr
        [answer] = result.of("check.report")
        assert answer["status"] == "ok" and answer["databases"]["marketplace"]["from"] == "DATABASE_URL"
    finally:
        for engine in engines:
            engine.dispose()
        pg_server.drop_database(f"{tag}_p")
        pg_server.drop_database(f"{tag}_m")


def test_python_dash_m_jobs_runs_from_anywhere(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "jobs", "--help"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60, env={**bare_env(), "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0


# -- settings as the command line meets them ------------------------------------------------------

PASSWORD = "p@ssW0rd#S3cr3t/x"


def assert_no_password_fragment(text: str, password: str = PASSWORD) -> None:
    for fragment in ("ssW0rd", "S3cr3t", "W0rd#", *(password[i:i + 4] for i in range(len(password) - 3))):
        assert fragment not in text, (fragment, text)


def test_the_environment_url_beats_the_config_file_url(dbs, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[database]\nproduct_url = "postgresql://u@127.0.0.1:{closed_port()}/wrong"\n')
    result = run_cli("plan", "--config", str(cfg), env=dbs.env())
    assert result.code == 0, result.stdout + result.stderr
    assert result.report["source"]["db"] == dbs.product.display


def test_database_url_is_the_marketplace_fallback(dbs):
    dbs.add_product(("a", "A", "pro", "active"))
    env = dbs.env(DATABASE_URL=dbs.marketplace_url)
    del env["MARKETPLACE_DATABASE_URL"]
    result = run_cli("run", env=env)
    assert result.code == 0, result.stdout + result.stderr
    assert result.report["target"]["db"] == dbs.marketplace.display and "a" in dbs.market()


@pytest.mark.parametrize("url", [f"postgresql://reconcile:{PASSWORD}@127.0.0.1:5432/keybuzz",
                                 "postgresql://reconcile:ssW0rd@S3cr3t@127.0.0.1/keybuzz",
                                 "postgresql://reconcile:ssW0rd/S3cr3t@127.0.0.1/keybuzz"])
@pytest.mark.parametrize("where", ["env", "file", "flag"])
def test_ambiguous_url_exit_2_one_line_naming_it_and_no_fragment_of_the_password(tmp_path, url, where):
    env = bare_env(MARKETPLACE_DATABASE_URL="postgresql://u@127.0.0.1/m")
    args = ["plan"]
    if where == "env":
        env["PRODUCT_DATABASE_URL"] = url
        name = "PRODUCT_DATABASE_URL"
    elif where == "file":
        (tmp_path / "url").write_text(url + "\n")
        env["PRODUCT_DATABASE_URL_FILE"] = str(tmp_path / "url")
        name = "PRODUCT_DATABASE_URL_FILE"
    else:
        args += ["--product-url", url]
        name = "--product-url"
    result = run_cli(*args, env=env)
    assert result.code == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and name in lines[0] and "percent-encode" in lines[0]
    assert_no_password_fragment(result.stdout + result.stderr)
    assert_no_traceback(result)


def test_new_guard_and_skip_options_are_accepted_by_run_plan_and_schedule():
    for command in ("run", "plan", "schedule"):
        text = run_cli(command, "--help", env=bare_env()).stdout
        assert "--skip" in text and "--max-archive-ratio" in text, command
        assert ("--allow-empty-source" in text) == (command != "schedule"), command


@pytest.mark.parametrize(("args", "fragment"), [
    (["--max-archive-ratio", "1.5"], "--max-archive-ratio must be between 0.0 and 1.0"),
    (["--pushgateway", f"ftp://u:{PASSWORD}@gw"], "--pushgateway must be an http:// or https:// URL"),
])
def test_bad_new_options_exit_2_naming_them(args, fragment):
    env = bare_env(PRODUCT_DATABASE_URL="postgresql://u@h/p", MARKETPLACE_DATABASE_URL="postgresql://u@h/m")
    result = run_cli("run", *args, env=env)
    assert result.code == 2 and fragment in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert_no_password_fragment(result.stderr + result.stdout)


def test_pushgateway_credentials_reach_the_gateway_as_basic_auth_and_never_the_output(dbs):
    import base64

    from tests.test_metrics import gateway

    secret = "S3cr3t"
    with gateway() as (port, received):
        result = run_cli("run", "--pushgateway", f"http://user:{secret}@127.0.0.1:{port}", env=dbs.env())
    assert result.code == 0 and result.of("metrics.pushed")[0]["pushgateway"] == f"http://127.0.0.1:{port}"
    assert received[0][2] == "Basic " + base64.b64encode(f"user:{secret}".encode()).decode()
    assert "S3cr" not in result.stdout + result.stderr and "3cr3" not in result.stdout + result.stderr
    failed = run_cli("run", env=dbs.env(RECONCILE_PUSHGATEWAY_URL=f"http://user:{secret}@127.0.0.1:{closed_port()}"))
    assert failed.code == 0 and failed.of("metrics.push_failed")
    assert "S3cr" not in failed.stdout + failed.stderr and "3cr3" not in failed.stdout + failed.stderr
