"""The answer of `check`, as JSON fields and as a table for people."""

from __future__ import annotations

from typing import Any

from reconcile.preflight import Preflight


def check_answer(found: Preflight) -> dict[str, Any]:
    status = "unreachable" if found.unreachable else "problems" if found.problems else "ok"
    databases = {k: {key: v for key, v in value.items() if key not in ("clock", "read_at")}
                 if isinstance(value, dict) else value for k, value in found.databases.items()}
    return {"status": status, "databases": databases,
            "checks": [{"check": f.check, "ok": f.ok, "detail": f.detail} for f in found.findings],
            "problems": [f"{f.check}: {f.detail}" for f in found.problems]}


def render_check(found: Preflight) -> str:
    from reconcile.report.console import count_of, table

    rows = [("ok" if f.ok else ("FAIL" if f.problem else "note"), f.check, f.detail) for f in found.findings]
    answer = check_answer(found)
    lines = [table(("", "check", "detail"), rows), ""]
    for which in ("product", "marketplace"):
        db = answer["databases"].get(which, {})
        lines.append(f"{which}: {db.get('db')}" + (f" (from {db['from']})" if db.get("from") else ""))
    problems = len(found.problems)
    lines.append(f"Check: {count_of(problems, 'problem')}." if problems else "Check: ok, no problem.")
    return "\n".join(lines)
