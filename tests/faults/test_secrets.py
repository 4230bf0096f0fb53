"""No piece of a database password in any output (stdout, stderr, the report file), on every
failure path. The URLs carry a distinctive password (percent-encoded); the check looks for it and
for every fragment of four characters or more, raw and encoded. (Every other fault test makes the
same check on its own outputs: restarts, a full temp directory, concurrent syncs, ...)"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from reconcile.db.lock import lock_key
from reconcile.shard import Shard
from tests.faults.harness import (
    BULK,
    INSERT,
    PASSWORD,
    SNAPSHOT,
    Faults,
    Outcome,
    assert_no_secret,
    outputs,
    proxied_url,
    run,
    seed_bulk,
)


def refused(faults: Faults, tmp: Path, report: str) -> tuple[Outcome, int]:
    faults.product.refuse()
    return run("run", "--report-file", report, env=faults.env(RECONCILE_CONNECT_RETRY="1"), deadline=20), 7


def reset(faults: Faults, tmp: Path, report: str) -> tuple[Outcome, int]:
    faults.market.add("reset")
    return run("run", "--report-file", report, env=faults.env(), deadline=20), 7


def stalled(faults: Faults, tmp: Path, report: str) -> tuple[Outcome, int]:
    seed_bulk(faults.dbs, **BULK)
    faults.product.add("stall", marker=SNAPSHOT, direction="s2c", after=8000)
    return run("run", "--report-file", report, env=faults.env(RECONCILE_NETWORK_TIMEOUT="2"), deadline=15), 7


def dropped(faults: Faults, tmp: Path, report: str) -> tuple[Outcome, int]:
    seed_bulk(faults.dbs, new=50)
    faults.market.add("drop", marker=INSERT, direction="s2c")
    return run("run", "--report-file", report, env=faults.env(), deadline=20), 7


def sync_dropped(faults: Faults, tmp: Path, report: str) -> tuple[Outcome, int]:
    faults.dbs.add_product(("solo", "Solo", "pro", "active"))
    faults.market.add("drop", marker=INSERT, direction="s2c")
    return run("sync", "solo", env=faults.env(), deadline=20), 7


def guard(faults: Faults, tmp: Path, report: str) -> tuple[Outcome, int]:
    seed_bulk(faults.dbs, archived=30)
    return run("run", "--report-file", report, env=faults.env(), deadline=20), 5


def lock_held(faults: Faults, tmp: Path, report: str) -> tuple[Outcome, int]:
    seed_bulk(faults.dbs, new=5)
    url_file = tmp / "marketplace-url"
    url_file.write_text(proxied_url(faults.dbs.marketplace, faults.market) + "\n", encoding="utf-8")
    env = faults.env(MARKETPLACE_DATABASE_URL_FILE=str(url_file))
    env.pop("MARKETPLACE_DATABASE_URL")
    with faults.dbs.engine("marketplace").connect() as holder:
        holder.exec_driver_sql("SELECT pg_advisory_lock(%s)", (lock_key(Shard()),))
        return run("run", "--report-file", report, env=env, deadline=20), 6


def bad_label(faults: Faults, tmp: Path, report: str) -> tuple[Outcome, int]:
    config = tmp / "reconcile.toml"
    config.write_text('[mapping.plan]\ngold = "GOLD"\n', encoding="utf-8")
    return run("plan", "--config", str(config), "--report-file", report, env=faults.env(), deadline=20), 2


def tmpdir_missing(faults: Faults, tmp: Path, report: str) -> tuple[Outcome, int]:
    seed_bulk(faults.dbs, new=20)
    return run("run", "--report-file", report, env=faults.env(TMPDIR=str(tmp / "missing")), deadline=20), 7


def unencoded_password(faults: Faults, tmp: Path, report: str) -> tuple[Outcome, int]:
    """The password pasted raw into the URL: '@', '#' and '%' make it ambiguous."""
    db = faults.dbs.marketplace.url.database
    env = faults.env(MARKETPLACE_DATABASE_URL=f"postgresql://postgres:{PASSWORD}@127.0.0.1:{faults.market.port}/{db}")
    return run("run", "--report-file", report, env=env, deadline=20), 2


SCENARIOS: dict[str, Callable[[Faults, Path, str], tuple[Outcome, int]]] = {
    "refused": refused, "reset": reset, "stalled": stalled, "dropped": dropped, "sync-dropped": sync_dropped,
    "guard": guard, "lock-held-url-from-file": lock_held, "bad-enum-label": bad_label,
    "tmpdir-missing": tmpdir_missing, "unencoded-password": unencoded_password,
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_no_piece_of_the_password_in_any_output(faults, tmp_path, scenario):
    report_file = str(tmp_path / "report.json")
    out, expected = SCENARIOS[scenario](faults, tmp_path, report_file)
    out.report_file = report_file
    assert_no_secret(*outputs(out))
    assert out.code == expected, f"{scenario}: exit {out.code}, expected {expected}{out.tail()}"
    assert "Traceback" not in out.stderr, out.stderr[-1500:]
