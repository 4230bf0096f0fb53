"""The keybuzz-backend scenario (two tenants missing from the marketplace) end to end through the CLI,
against a real server."""

from __future__ import annotations

from tests.pgtools import run_cli


def test_the_two_tenants_missing_from_the_marketplace_are_created(dbs):
    dbs.add_product(("ecomlg-001", "eComLG", "pro", "active"), ("kbz-001", "K1", "starter", "active"),
                    ("kbz-003", "K3", "dev", "trial"), ("kbz-004", "K4", None, None))
    dbs.add_market(("ecomlg-001", "eComLG", "PRO", "ACTIVE"), ("kbz-001", "K1", "STARTER", "ACTIVE"))
    result = run_cli("run", env=dbs.env())
    assert result.code == 0, result.stderr
    report = result.report
    assert report["created"] == ["kbz-003", "kbz-004"]
    assert report["counts"]["unchanged"] == 2
    market = dbs.market()
    assert (market["kbz-004"]["plan"], market["kbz-004"]["status"]) == ("DEV", "ACTIVE")
