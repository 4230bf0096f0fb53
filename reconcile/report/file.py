"""`--report-file`: the report object written atomically, and its path checked before the run."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import orjson

from reconcile.errors import ConfigError
from reconcile.report.logs import utc_timestamp
from reconcile.report.model import Report


def write_report_file(report: Report, path: str | os.PathLike[str], log: Any) -> None:
    """The same object as the stdout event, atomically: a temp file in the same directory (mode
    from the umask, like any file the job writes), fsync, rename. A failure is an event, never a
    changed exit code: the run's outcome stands."""
    document = {"event": "reconcile.report", "level": report.level, "timestamp": utc_timestamp(),
                "run_id": report.run_id, **report.as_dict()}
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(orjson.dumps(document, default=str, option=orjson.OPT_INDENT_2) + b"\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as exc:
        log.error("report.file_failed", path=str(target), error=exc.strerror or str(exc))


def check_report_path(path: str | os.PathLike[str], flag: str = "--report-file") -> None:
    """Before the run, so a bad --report-file (or `plan --out`) is a configuration error (exit 2),
    not a file lost after the work is done. Creates missing parent directories, as the write would."""
    target = Path(path)
    if target.is_dir():
        raise ConfigError(f"{flag} {str(target)!r} is a directory")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{flag} {str(target)!r}: cannot create its directory ({exc.strerror or exc})") from None
    if not os.access(target.parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {str(target)!r}: directory {str(target.parent)!r} is not writable")
