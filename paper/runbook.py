"""The operator runbook over a paper-session artifact root: list, show, health, alerts, index, promotion.

Reads only `<root>/<session_id>/` folders (no Django, no database), so it works on a copied root.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from paper import artifact_contract as c
from paper import artifact_files as af

# Files a session writes when it starts; the rest only appear once it reaches a terminal status.
START_FILES = (c.METADATA, c.STATUS, c.CONFIG)
INDEX_COLUMNS = (
    "session_id", "status", "terminal", "status_reason", "started_at", "finished_at",
    "duration_seconds", "request_id", "mode", "ticker", "strategy", "bot_name", "total_return",
    "sharpe", "max_drawdown", "num_trades", "num_fills", "total_pnl", "issue",
)
INDEX_METRICS = ("total_return", "sharpe", "max_drawdown", "num_trades", "num_fills", "total_pnl")
UNKNOWN = "unknown"
COUNTED_STATUSES = (*c.STATUSES, UNKNOWN)
DEFAULT_STALE_MINUTES = 60.0
# A session's JSON files are a few kilobytes; a bigger one is damage, and is not read into memory.
MAX_JSON_BYTES = af.MAX_JSON_BYTES
# Longest value (a reason, an error message) shown from a session's files.
MAX_TEXT = 2000


class RunbookError(ValueError):
    """An operator asked for something the artifact root cannot answer (bad root, unknown id)."""


@dataclass
class SessionRecord:
    session_id: str
    path: Path
    status: str = UNKNOWN
    terminal: bool = False
    status_reason: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime | None = None
    duration_seconds: float | None = None
    request_id: str | None = None
    mode: str | None = None
    ticker: str | None = None
    strategy: str | None = None
    bot_name: str | None = None
    metrics: dict = field(default_factory=dict)
    error_type: str | None = None
    error_message: str | None = None
    artifacts: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    # Everything wrong with the folder itself (unreadable or inconsistent files), worst first.
    problems: list[str] = field(default_factory=list)
    issue: str | None = None
    # Faults the session recovered from (status.json `incidents`): {at, kind, message}.
    incidents: list[dict] = field(default_factory=list)

    @property
    def unreadable(self) -> bool:
        return self.status == UNKNOWN

    @property
    def risk_halted(self) -> bool:
        return (self.status_reason or "").startswith(c.REASON_RISK_HALT) or bool(self.metrics.get("halt"))

    def to_dict(self) -> dict:
        """JSON-ready: times as ISO-8601 UTC, the path as a string."""
        d = asdict(self)
        d["path"] = str(self.path)
        for key in ("created_at", "started_at", "finished_at", "updated_at"):
            d[key] = _iso(d[key])
        return d


# -- reading one folder ------------------------------------------------------------------------

def printable(text: str) -> str:
    """`text` as valid UTF-8: a folder name that is not UTF-8 (Python keeps its bytes as lone
    surrogates) or a lone surrogate from a JSON escape would make printing or writing it fail."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def json_safe(value):
    """`value` as strict JSON takes it: NaN and infinities become null, text becomes printable.

    A hand-edited metrics.json may hold NaN (Python's json reads it); strict readers of the index
    and of `--json` output (jq, JavaScript, PostgreSQL) refuse it.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {printable(str(k)): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def _shown(value, limit: int = 60) -> str:
    """repr(value), cut: a problem names the bad value without echoing a megabyte of it."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a folder that cannot be searched
        return False


def _read_json(dir_fd: int, name: str) -> tuple[dict | None, str | None]:
    """(object, None) or (None, problem): `name` in the opened session folder `dir_fd`, read as
    artifact_files reads (a regular file, no link followed, never a wait, at most MAX_JSON_BYTES);
    a bad file is reported, never raised."""
    try:
        data = af.read_at(dir_fd, name, limit=MAX_JSON_BYTES)
        obj = json.loads(data.decode("utf-8"))
    except json.JSONDecodeError as exc:
        return None, f"{name}: not valid JSON (line {exc.lineno})"
    except UnicodeDecodeError:
        return None, f"{name}: not UTF-8 text"
    except RecursionError:
        return None, f"{name}: not valid JSON (nested too deeply)"
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):  # a folder in its place too
        return None, f"{name}: missing"
    except af.Refused as exc:  # a symlink, a FIFO, a device, a folder, too large
        return None, f"{name}: {exc.strerror}"
    except OSError as exc:
        return None, f"{name}: unreadable ({exc.strerror or exc})"
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits
        return None, f"{name}: not valid JSON ({str(exc)[:80]})"
    if not isinstance(obj, dict):
        return None, f"{name}: not a JSON object"
    return obj, None


def _text(value) -> str | None:
    if value is None or value == "":
        return None
    text = printable(value if isinstance(value, str) else json.dumps(json_safe(value), sort_keys=True, default=str))
    return text if len(text) <= MAX_TEXT else f"{text[:MAX_TEXT]}... ({len(text):,} characters)"


def _time(doc: dict, key: str, name: str, problems: list[str]) -> datetime | None:
    raw = doc.get(key)
    if raw in (None, ""):
        return None
    try:
        t = datetime.fromisoformat(raw) if isinstance(raw, str) and len(raw) <= 64 else None
        # The contract writes UTC; a naive time from a hand-edited file is read as UTC too.
        t = t if t is None else t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    except (ValueError, OverflowError):  # 9999-12-31T23:59-05:00 is past the last datetime in UTC
        t = None
    if t is None:
        problems.append(f"{name}: {key} {_shown(raw)} is not an ISO-8601 time")
        return None
    return t


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t is not None else None


def _outcome(record: SessionRecord) -> str | None:
    if record.status == c.FAILED:
        detail = ": ".join(x for x in (record.error_type, record.error_message) if x)
        return f"failed: {detail or record.status_reason or 'no error recorded'}"
    if record.status == c.ABORTED:
        return f"aborted: {record.status_reason or 'no reason recorded'}"
    return None


def _folder_open(session_dir: Path) -> tuple[int | None, str | None]:
    """(descriptor, None) of a session folder, or (None, why it cannot be read at all). A symlink
    in the folder's place is not followed: it is the session's issue, whatever it leads to."""
    try:
        return af.open_folder(session_dir), None
    except af.Refused as exc:
        return None, f"{exc.strerror}, not a folder"
    except NotADirectoryError as exc:  # "a FIFO, not a folder" (or the kernel's "Not a directory")
        return None, exc.strerror if "not a folder" in (exc.strerror or "") else "a file, not a folder"
    except OSError as exc:
        return None, f"unreadable ({exc.strerror or exc})"
    except ValueError as exc:  # a NUL in the name
        return None, f"unreadable ({exc})"


def _folder_problem(session_dir: Path) -> str | None:
    """Why a session folder cannot be read at all, or None."""
    fd, problem = _folder_open(session_dir)
    if fd is not None:
        os.close(fd)
    return problem


def session_read(session_dir: Path) -> SessionRecord:
    """One session folder as a record; whatever is wrong with it lands in problems/issue."""
    session_dir = Path(session_dir)
    record = SessionRecord(session_id=printable(session_dir.name), path=session_dir)
    dir_fd, folder_problem = _folder_open(session_dir)
    if folder_problem:
        record.problems, record.issue = [folder_problem], folder_problem
        record.missing = list(c.CANONICAL_FILES)
        return record
    try:
        return _session_read_at(record, dir_fd)
    finally:
        os.close(dir_fd)


def _session_read_at(record: SessionRecord, dir_fd: int) -> SessionRecord:
    session_dir = record.path
    status_problems: list[str] = []
    problems: list[str] = []
    if record.session_id != session_dir.name:
        problems.append(f"session folder: name {record.session_id!r} is not UTF-8")

    status_doc, problem = _read_json(dir_fd, c.STATUS)
    if problem:
        status_problems.append(problem)
    else:
        raw = status_doc.get("status")
        if raw in c.STATUSES:
            record.status = raw
        elif raw in (None, ""):
            status_problems.append(f"{c.STATUS}: no status")
        else:
            status_problems.append(f"status {_shown(raw)} is not one of {'/'.join(c.STATUSES)}")
        record.terminal = record.status in c.TERMINAL
        if "terminal" in status_doc and record.status != UNKNOWN and status_doc["terminal"] is not record.terminal:
            problems.append(f"{c.STATUS}: terminal {_shown(status_doc['terminal'])} disagrees with status {record.status!r}")
        record.status_reason = _text(status_doc.get("status_reason"))
        record.error_type = _text(status_doc.get("error_type"))
        record.error_message = _text(status_doc.get("error_message"))
        record.started_at = _time(status_doc, "started_at", c.STATUS, problems)
        record.finished_at = _time(status_doc, "finished_at", c.STATUS, problems)
        record.updated_at = _time(status_doc, "updated_at", c.STATUS, problems)
        incidents = status_doc.get("incidents")
        if isinstance(incidents, list):
            record.incidents = [i for i in incidents if isinstance(i, dict) and isinstance(i.get("message"), str)]
        if record.started_at and record.finished_at:
            seconds = (record.finished_at - record.started_at).total_seconds()
            if seconds < 0:
                problems.append(f"{c.STATUS}: finished_at is before started_at")
            else:
                record.duration_seconds = seconds
        sid = status_doc.get("session_id")
        if sid not in (None, "") and sid != record.session_id:
            problems.append(f"{c.STATUS}: session_id {_shown(sid)} does not match folder {record.session_id!r}")

    metadata, problem = _read_json(dir_fd, c.METADATA)
    if problem:
        problems.append(problem)
    else:
        record.created_at = _time(metadata, "created_at", c.METADATA, problems)
        record.request_id = _text(metadata.get("request_id"))
        record.mode = _text(metadata.get("mode"))
        record.ticker = _text(metadata.get("ticker"))
        record.strategy = _text(metadata.get("strategy"))
        record.bot_name = _text(metadata.get("bot_name"))
        sid = metadata.get("session_id")
        if sid != record.session_id:
            problems.append(f"{c.METADATA}: session_id {_shown(sid)} does not match folder {record.session_id!r}")

    refused: dict[str, str] = {}  # canonical names whose entry is not a regular file: why
    for name in c.CANONICAL_FILES:
        state = af.file_state(dir_fd, name)
        if state is None:
            record.artifacts[name] = name
        else:
            record.missing.append(name)
            if state != "missing":
                refused[name] = state

    # Missing files only count as a problem once the session should have written them; the
    # status file's own absence is already the headline.
    expected = c.CANONICAL_FILES if record.status == c.SUCCESS else START_FILES
    # A hostile entry (a symlink, a FIFO, a device) is a problem whatever the status; the two
    # files read above already said what is wrong with them.
    problems.extend(f"{name}: {refused[name]}" if name in refused else f"{name}: missing"
                    for name in record.missing
                    if (name in expected or name in refused) and name not in (c.STATUS, c.METADATA))

    if c.METRICS not in record.missing:
        metrics, problem = _read_json(dir_fd, c.METRICS)
        if problem:
            problems.append(problem)
        else:
            record.metrics = json_safe(metrics)
    if c.REPORT not in record.missing:
        report, problem = _read_json(dir_fd, c.REPORT)
        if problem:
            problems.append(problem)
        else:
            contract = (report.get("machine_contract") or {}) if isinstance(report.get("machine_contract"), dict) else {}
            if contract.get("contract_type") != c.PAPER_CONTRACT_TYPE:
                problems.append(f"{c.REPORT}: contract_type {_shown(contract.get('contract_type'))} "
                                f"is not {c.PAPER_CONTRACT_TYPE}")
            if record.request_id is None:
                record.request_id = _text(contract.get("request_id"))
    if c.CONFIG not in record.missing:
        _, problem = _read_json(dir_fd, c.CONFIG)
        if problem:
            problems.append(problem)

    record.problems = status_problems + problems
    # The headline an operator sees: cannot-read first, then how the session ended, then the rest.
    headline = [*status_problems, _outcome(record), *problems]
    record.issue = next((x for x in headline if x), None)
    return record


# -- the root ----------------------------------------------------------------------------------

_NO_TIME = datetime.min.replace(tzinfo=UTC)


def _order_key(record: SessionRecord) -> tuple:
    # Sessions with no readable time at all sort first, so they never pose as the latest.
    t = record.started_at or record.created_at
    return (t is not None, t or _NO_TIME, record.session_id)


def _root_dir(root: Path) -> Path:
    root = Path(root)
    try:
        if not root.is_dir():
            raise RunbookError(f"paper session root not found (or not a folder): {printable(str(root))}")
    except (OSError, ValueError) as exc:  # a root that cannot be searched; a NUL in the name
        raise RunbookError(f"paper session root unreadable: {printable(str(root))} ({exc})") from None
    return root


def _is_session_entry(p: Path) -> bool:
    # Files in the root (the index, temp files) are not sessions; neither are hidden folders. A
    # link that leads nowhere (dangling, or a loop) stands where a session folder was: it is
    # listed, as unreadable, rather than silently dropped.
    if p.name.startswith("."):
        return False
    try:
        return p.is_dir() or (p.is_symlink() and not p.exists())
    except OSError:
        return True


def _session_dirs(root: Path) -> list[Path]:
    root = _root_dir(root)
    try:
        entries = list(root.iterdir())
    except OSError as exc:
        raise RunbookError(f"paper session root unreadable: {printable(str(root))} ({exc.strerror or exc})") from None
    return [p for p in entries if _is_session_entry(p)]


def sessions_scan(root: Path, cache: dict | None = None) -> list[SessionRecord]:
    """Every session folder under root, oldest first by (started_at or created_at, session_id).

    With `cache` (a dict the caller keeps between scans of one root), a folder whose files have
    not changed since the last scan (`_folder_signature`) is not read again: the refresh after
    each session then costs a listing per folder (~20 µs), not reading every folder's JSON.
    """
    dirs = _session_dirs(root)
    if cache is None:
        return sorted((session_read(p) for p in dirs), key=_order_key)
    records = []
    for path in dirs:
        signature = _folder_signature(path)  # before the read: a change during it is seen next time
        hit = cache.get(path)
        if signature is not None and hit is not None and hit[0] == signature:
            records.append(hit[1])
            continue
        record = session_read(path)
        records.append(record)
        if signature is None:
            cache.pop(path, None)
        else:
            cache[path] = (signature, record)
    for gone in set(cache) - set(dirs):
        del cache[gone]
    return sorted(records, key=_order_key)


def _folder_signature(session_dir: Path) -> tuple | None:
    """What a session folder's record is read from: each entry's name, inode, size and mtime, one
    level of subfolders included. Artifacts are replaced by rename (a new inode) and an edit in
    place moves the mtime, so an unchanged signature means an unchanged record. None when the
    folder cannot be listed (it is then read afresh, and its problem reported)."""
    entries = []
    try:
        # The folder's own entry first: a symlink in its place and the real folder moved there
        # read differently (session_read does not follow the link) with the same contents.
        own = os.lstat(session_dir)
        stack = [("", os.fspath(session_dir))]
        while stack:
            prefix, folder = stack.pop()
            with os.scandir(folder) as listing:
                for entry in listing:
                    try:
                        st = entry.stat(follow_symlinks=False)  # what session_read sees: links are not followed
                    except OSError:
                        entries.append((prefix + entry.name, None))
                        continue
                    entries.append((prefix + entry.name, st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode))
                    if not prefix and entry.is_dir(follow_symlinks=False):
                        stack.append((entry.name + "/", entry.path))
    except OSError:
        return None
    return ((own.st_ino, own.st_mode), *sorted(entries, key=lambda e: e[0]))


def session_show(root_or_dir: Path, session: str | None = None) -> SessionRecord:
    """One session: by its folder, or by root plus its exact id or a unique id prefix."""
    base = Path(root_or_dir)
    if session is None:
        problem = _folder_problem(base)
        if problem:
            shown = printable(str(base))
            if not (base.exists() or base.is_symlink()):
                raise RunbookError(f"paper session folder not found: {shown}")
            raise RunbookError(f"not a readable paper session folder: {shown}: {problem}")
        if not any(_is_file(base / name) for name in START_FILES) and any(_is_session_entry(p) for p in base.iterdir()):
            raise RunbookError(f"{printable(str(base))} looks like a paper session root, not a session; pass a session id")
        return session_read(base)
    if not session or "/" in session or "\\" in session or "\x00" in session or session in (".", ".."):
        raise RunbookError(f"not a paper session id: {_shown(session)}")
    dirs = {p.name: p for p in _session_dirs(base)}
    if session in dirs:
        return session_read(dirs[session])
    matches = sorted(name for name in dirs if name.startswith(session))
    if not matches:
        raise RunbookError(f"no paper session {session!r} in {base}")
    if len(matches) > 1:
        raise RunbookError(f"session id prefix {session!r} is ambiguous in {base}: {', '.join(matches)}")
    return session_read(dirs[matches[0]])


def _utc(now: datetime) -> datetime:
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


def _summary(record: SessionRecord) -> dict:
    return {
        "session_id": record.session_id,
        "status": record.status,
        "terminal": record.terminal,
        "status_reason": record.status_reason,
        "started_at": _iso(record.started_at),
        "finished_at": _iso(record.finished_at),
        "duration_seconds": record.duration_seconds,
        "issue": record.issue,
    }


def health(root: Path, *, now: datetime) -> dict:
    """The quick pulse: counts per status, the latest session and the latest visible issue."""
    records = sessions_scan(root)
    counts = dict.fromkeys(COUNTED_STATUSES, 0)
    for record in records:
        counts[record.status] += 1
    with_issue = [r for r in records if r.issue]
    return {
        "root": str(root),
        "generated_at": _utc(now).isoformat(),
        "total": len(records),
        "counts": counts,
        "latest": _summary(records[-1]) if records else None,
        "latest_issue": (
            {"session_id": with_issue[-1].session_id, "issue": with_issue[-1].issue, "status": with_issue[-1].status}
            if with_issue else None
        ),
    }


# -- alerts ------------------------------------------------------------------------------------

def _alert_for(record: SessionRecord, *, now: datetime, stale_minutes: float) -> tuple[str, str] | None:
    if record.unreadable:
        return c.ALERT_UNREADABLE, f"session folder unreadable: {record.issue}"
    if record.status == c.FAILED:
        return c.ALERT_FAILED, record.issue or "failed"
    if record.status == c.ABORTED:
        reason = record.status_reason or "no reason recorded"
        if reason.startswith(c.REASON_RISK_HALT):
            return c.ALERT_ABORTED, f"risk halt: aborted by the risk gate ({reason})"
        return c.ALERT_ABORTED, f"aborted: {reason}"
    if record.status == c.RUNNING:
        seen = record.updated_at or record.started_at
        if seen is None:
            return c.ALERT_STALE, "running with no updated_at or started_at recorded"
        age = (now - seen).total_seconds()
        if age > stale_minutes * 60:
            what = "updated_at" if record.updated_at else "started_at"
            return c.ALERT_STALE, (f"running, last {what} {seen.isoformat()} is {duration_text(age)} old "
                                   f"(stale after {stale_minutes:g} min)")
    if record.incidents:
        n = len(record.incidents)
        listed = "; ".join(i["message"] for i in record.incidents[:3]) + ("; ..." if n > 3 else "")
        return c.ALERT_INCIDENT, f"recovered from {n} incident{'s' if n > 1 else ''}: {listed}"
    return None


def alerts(root: Path, *, now: datetime, stale_minutes: float = DEFAULT_STALE_MINUTES) -> dict:
    """A deterministic alert snapshot: the same root and `now` give byte-identical JSON."""
    if not (isinstance(stale_minutes, int | float) and math.isfinite(stale_minutes) and stale_minutes >= 0):
        raise RunbookError(f"stale minutes must be a number >= 0, got {stale_minutes!r}")
    now = _utc(now)
    found = []
    for record in sessions_scan(root):
        hit = _alert_for(record, now=now, stale_minutes=stale_minutes)
        if hit:
            found.append((_order_key(record), hit[0], {
                "code": hit[0],
                "session_id": record.session_id,
                "status": record.status,
                "status_reason": record.status_reason,
                "started_at": _iso(record.started_at),
                "updated_at": _iso(record.updated_at),
                "message": hit[1],
            }))
    found.sort(key=lambda item: (item[0], item[1]))
    rows = [item[2] for item in found]
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["code"]] = counts.get(row["code"], 0) + 1
    return {
        "generated_at": now.isoformat(),
        "root": str(root),
        "stale_minutes": float(stale_minutes),  # 60 and 60.0 must dump the same bytes
        "alerts": rows,
        "counts": dict(sorted(counts.items())),
    }


# -- index -------------------------------------------------------------------------------------

def index_row(record: SessionRecord) -> dict:
    row = {
        "session_id": record.session_id,
        "status": record.status,
        "terminal": record.terminal,
        "status_reason": record.status_reason,
        "started_at": _iso(record.started_at),
        "finished_at": _iso(record.finished_at),
        "duration_seconds": record.duration_seconds,
        "request_id": record.request_id,
        "mode": record.mode,
        "ticker": record.ticker,
        "strategy": record.strategy,
        "bot_name": record.bot_name,
    }
    row.update({key: record.metrics.get(key) for key in INDEX_METRICS})
    row["issue"] = record.issue
    return row


def csv_cell(value) -> str:
    """How an index value is spelled in the CSV (None is empty, booleans lower-case like JSON).

    Text a spreadsheet would run as a formula (a bot named '=HYPERLINK(...)', a reason starting
    with '-') gets a leading apostrophe (`artifact_files.formula_safe`); numbers stay numbers.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return af.formula_safe(str(value))


def index_write(root: Path, cache: dict | None = None) -> tuple[Path, Path]:
    """Refresh paper_sessions_index.csv/.json in root; no timestamp inside, so a rewrite is identical.

    `cache`: see `sessions_scan` (the automatic refresh after each session keeps one per root).
    """
    root = _root_dir(root)
    rows = [index_row(r) for r in sessions_scan(root, cache)]
    # artifact_files.csv_line, not csv.writer: a CR inside a cell must be quoted too.
    text = af.csv_line(INDEX_COLUMNS) + "".join(af.csv_line([csv_cell(row[col]) for col in INDEX_COLUMNS])
                                               for row in rows)
    csv_path, json_path = root / c.INDEX_CSV, root / c.INDEX_JSON
    af.atomic_write(csv_path, text)
    doc = json_safe({"root": str(root), "sessions": rows})
    af.atomic_write(json_path, json.dumps(doc, indent=2, default=str, allow_nan=False) + "\n")
    return csv_path, json_path


# -- promotion ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class PromotionContract:
    """What a paper session must show before it moves toward the broker boundary."""

    min_bars: int = 100
    min_trades: int = 3
    min_sharpe: float = 0.5
    max_drawdown: float = 0.35  # a fraction, like metrics.json's max_drawdown
    require_success: bool = True
    forbid_halt: bool = True
    require_complete_artifacts: bool = True

    def __post_init__(self) -> None:
        for name in ("min_bars", "min_trades"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise RunbookError(f"{name} must be an integer, got {_shown(value)}")
        for name in ("min_sharpe", "max_drawdown"):
            value = getattr(self, name)
            # NaN compares false with everything: a NaN threshold would let every session through.
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise RunbookError(f"{name} must be a finite number, got {_shown(value)}")
        if not 0 <= self.max_drawdown <= 1:
            raise RunbookError(f"max_drawdown is a fraction in [0, 1] (0.35 = 35%), got {self.max_drawdown!r}")
        if self.min_bars < 0 or self.min_trades < 0:
            raise RunbookError("min_bars and min_trades must be >= 0")

    def to_dict(self) -> dict:
        return asdict(self)


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        value = float(value)  # an integer of 400 digits is not a metric
    except OverflowError:
        return None
    return value if math.isfinite(value) else None


def _blocking_reasons(record: SessionRecord, contract: PromotionContract) -> list[str]:
    # Nothing about an unreadable or unfinished session is final, so one reason says it all.
    if record.unreadable:
        return [f"session folder unreadable: {record.issue}"]
    if record.status == c.RUNNING:
        return ["still running"]
    reasons = []
    if contract.require_success and record.status != c.SUCCESS:
        detail = ": ".join(x for x in (record.error_type, record.error_message) if x) or record.status_reason
        reasons.append(f"status {record.status}" + (f" ({detail})" if detail else ""))
    if contract.forbid_halt and record.risk_halted:
        reasons.append("risk halt")
    # Missing files are reported once, below, as missing artifacts.
    reasons.extend(p for p in record.problems if not p.endswith(": missing"))
    if contract.require_complete_artifacts and record.missing:
        reasons.append(f"missing artifacts: {', '.join(record.missing)}")
    m = record.metrics
    if not m:
        reasons.append("no metrics to check")
        return reasons
    checks = (
        ("bars", lambda v: v < contract.min_bars, lambda v: f"only {v:g} bars < {contract.min_bars}"),
        ("num_trades", lambda v: v < contract.min_trades, lambda v: f"only {v:g} trades < {contract.min_trades}"),
        ("sharpe", lambda v: v < contract.min_sharpe, lambda v: f"sharpe {v:.2f} < {contract.min_sharpe:g}"),
        ("max_drawdown", lambda v: v > contract.max_drawdown,
         lambda v: f"max drawdown {v:.1%} > {contract.max_drawdown:.1%}"),
    )
    unknown = []
    for key, fails, words in checks:
        value = _number(m.get(key))
        if value is None:
            unknown.append(key)
        elif fails(value):
            reasons.append(words(value))
    if unknown:
        reasons.append(f"metrics unknown: {', '.join(unknown)}")
    return reasons


def promotion(root: Path, *, contract: PromotionContract | None = None) -> dict:
    """Which sessions satisfy the promotion contract, and why the others do not."""
    contract = contract or PromotionContract()
    ready, blocked = [], []
    for record in sessions_scan(root):
        reasons = _blocking_reasons(record, contract)
        if reasons:
            blocked.append({"session_id": record.session_id, "started_at": _iso(record.started_at),
                            "status": record.status, "reasons": reasons})
        else:
            m = record.metrics
            ready.append({"session_id": record.session_id, "started_at": _iso(record.started_at),
                          "sharpe": m.get("sharpe"), "max_drawdown": m.get("max_drawdown"),
                          "num_trades": m.get("num_trades"), "bars": m.get("bars")})
    return {
        "root": str(root),
        "contract": contract.to_dict(),
        "ready": ready,
        "blocked": blocked,
        "latest_ready": ready[-1] if ready else None,
        "latest_blocked": blocked[-1] if blocked else None,
    }


# -- text for humans ---------------------------------------------------------------------------

def duration_text(seconds: float | None) -> str:
    """How long a session ran, for people: '45s', '12m 05s', '3h 02m 10s', '2d 04h 00m'.

    The one formatter: the operator commands and the dashboard both use it.
    """
    if seconds is None:
        return "-"
    s = int(round(seconds))
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return f"{d}d {h:02d}h {m:02d}m"
    if h:
        return f"{h}h {m:02d}m {s:02d}s"
    if m:
        return f"{m}m {s:02d}s"
    return f"{s}s"


def _when(t: datetime | str | None) -> str:
    if t is None:
        return "-"
    if isinstance(t, str):
        t = datetime.fromisoformat(t)
    return t.strftime("%Y-%m-%d %H:%M:%S UTC")


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)).rstrip() for row in (header, *rows)]
    return "\n".join(lines)


def format_list(records: list[SessionRecord]) -> str:
    if not records:
        return "no paper sessions"
    rows = [
        (r.session_id, r.status, "yes" if r.terminal else "no", _when(r.started_at or r.created_at),
         duration_text(r.duration_seconds), r.issue or r.status_reason or "")
        for r in records
    ]
    return _table(("SESSION", "STATUS", "TERMINAL", "STARTED", "DURATION", "REASON / ISSUE"), rows)


def format_show(record: SessionRecord, *, now: datetime | None = None) -> str:
    if record.duration_seconds is not None:
        ran = duration_text(record.duration_seconds)
    elif record.status == c.RUNNING and record.started_at and now is not None:
        ran = f"{duration_text((_utc(now) - record.started_at).total_seconds())} so far (still running)"
    else:
        ran = "still running" if record.status == c.RUNNING else "-"
    fields = [
        ("session", record.session_id),
        ("folder", printable(str(Path(record.path).absolute()))),
        ("status", record.status),
        ("terminal", "yes" if record.terminal else "no"),
        ("reason", record.status_reason or "-"),
        ("created", _when(record.created_at)),
        ("started", _when(record.started_at)),
        ("finished", _when(record.finished_at)),
        ("updated", _when(record.updated_at)),
        ("ran for", ran),
        ("request id", record.request_id or "-"),
        ("mode", record.mode or "-"),
        ("bot", record.bot_name or "-"),
        ("strategy", record.strategy or "-"),
        ("ticker", record.ticker or "-"),
        ("error type", record.error_type or "-"),
        ("error message", record.error_message or "-"),
        ("issue", record.issue or "-"),
    ]
    m = record.metrics
    if m:
        dd = _number(m.get("max_drawdown"))
        shown = {key: "-" if m.get(key) is None else m[key] for key in ("sharpe", "num_trades", "bars", "total_pnl")}
        fields.append(("metrics", f"sharpe {shown['sharpe']}, max drawdown {'-' if dd is None else f'{dd:.1%}'}, "
                                  f"trades {shown['num_trades']}, bars {shown['bars']}, total P&L {shown['total_pnl']}"))
    width = max(len(k) for k, _ in fields)
    lines = [f"{k.ljust(width)}  {v}" for k, v in fields]
    lines.append("artifacts:")
    folder = Path(record.path).absolute()
    lines += [f"  {name.ljust(22)}  {printable(str(folder / rel))}" for name, rel in record.artifacts.items()] or ["  (none)"]
    if record.missing:
        lines.append(f"missing: {', '.join(record.missing)}")
    if len(record.problems) > 1 or (record.problems and record.problems[0] != record.issue):
        lines.append("problems:")
        lines += [f"  - {p}" for p in record.problems]
    return "\n".join(lines)


def format_health(d: dict) -> str:
    counts = ", ".join(f"{k} {v}" for k, v in d["counts"].items())
    lines = [f"paper sessions in {d['root']} at {_when(d['generated_at'])}", f"total {d['total']}: {counts}"]
    latest = d["latest"]
    lines.append(
        f"latest: {latest['session_id']} {latest['status']} (started {_when(latest['started_at'])})"
        if latest else "latest: -"
    )
    issue = d["latest_issue"]
    lines.append(f"latest issue: {issue['session_id']} [{issue['status']}] {issue['issue']}" if issue else "latest issue: -")
    return "\n".join(lines)


def format_alerts(d: dict) -> str:
    head = f"paper-session alerts in {d['root']} at {_when(d['generated_at'])} (stale after {d['stale_minutes']:g} min)"
    if not d["alerts"]:
        return f"{head}\nno alerts"
    counts = ", ".join(f"{k} {v}" for k, v in d["counts"].items())
    rows = [(a["code"], a["session_id"], a["status"], _when(a["started_at"]), a["message"]) for a in d["alerts"]]
    return f"{head}\n{len(rows)} alerts: {counts}\n" + _table(("CODE", "SESSION", "STATUS", "STARTED", "MESSAGE"), rows)


def format_promotion(d: dict) -> str:
    k = d["contract"]

    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    lines = [
        "promotion contract:",
        f"  min bars                    {k['min_bars']}",
        f"  min trades                  {k['min_trades']}",
        f"  min sharpe                  {k['min_sharpe']:g}",
        f"  max drawdown                {k['max_drawdown']:.1%}",
        f"  require success             {yes(k['require_success'])}",
        f"  forbid risk halt            {yes(k['forbid_halt'])}",
        f"  require complete artifacts  {yes(k['require_complete_artifacts'])}",
        "",
        f"ready ({len(d['ready'])}):",
    ]
    for s in d["ready"]:
        dd = _number(s["max_drawdown"])
        lines.append(f"  {s['session_id']}  started {_when(s['started_at'])}  sharpe {s['sharpe']}  "
                     f"max drawdown {f'{dd:.1%}' if dd is not None else '-'}  trades {s['num_trades']}  bars {s['bars']}")
    lines.append(f"blocked ({len(d['blocked'])}):")
    for s in d["blocked"]:
        lines.append(f"  {s['session_id']}  [{s['status']}]  started {_when(s['started_at'])}")
        lines += [f"    - {reason}" for reason in s["reasons"]]
    lines.append("")
    lines.append(f"latest ready: {d['latest_ready']['session_id'] if d['latest_ready'] else '-'}")
    lb = d["latest_blocked"]
    lines.append(f"latest blocked: {lb['session_id']} ({'; '.join(lb['reasons'])})" if lb else "latest blocked: -")
    return "\n".join(lines)


# -- command line (no Django: `python -m paper.runbook health outputs/paper_sessions`) ----------

def main(argv: list[str] | None = None, *, now: datetime | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m paper.runbook", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("list", "health", "alerts", "index", "promotion"):
        p = sub.add_parser(name)
        p.add_argument("root", type=Path)
        p.add_argument("--json", action="store_true", help="machine-readable output")
    show = sub.add_parser("show")
    show.add_argument("target", type=Path, help="a session folder, or the root when SESSION is given")
    show.add_argument("session", nargs="?", help="exact session id or a unique prefix")
    show.add_argument("--json", action="store_true")
    sub.choices["alerts"].add_argument("--stale-minutes", type=float, default=DEFAULT_STALE_MINUTES)
    sub.choices["alerts"].add_argument("--text", action="store_true", help="a table instead of JSON")
    args = parser.parse_args(argv)
    now = now or datetime.now(UTC)

    try:
        if args.command == "list":
            records = sessions_scan(args.root)
            machine, text = [r.to_dict() for r in records], format_list(records)
        elif args.command == "show":
            record = session_show(args.target, args.session)
            machine, text = record.to_dict(), format_show(record, now=now)
        elif args.command == "health":
            machine = health(args.root, now=now)
            text = format_health(machine)
        elif args.command == "alerts":
            # Alerts feed automation, so JSON is the default and the table is opt-in.
            machine = alerts(args.root, now=now, stale_minutes=args.stale_minutes)
            text = format_alerts(machine)
            args.json = not args.text
        elif args.command == "index":
            paths = index_write(args.root)
            machine, text = [str(p) for p in paths], "\n".join(str(p) for p in paths)
        else:
            machine = promotion(args.root)
            text = format_promotion(machine)
    except RunbookError as exc:
        print(f"error: {printable(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:  # the root cannot be read or the index written (permissions, a full disk)
        print(f"error: {printable(str(exc))}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(json_safe(machine), indent=2, sort_keys=True, default=str, allow_nan=False))
    else:
        print(printable(text))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
