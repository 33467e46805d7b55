"""Paper-session artifact roots for the runbook tests, written file by file per the contract.

No Django: the runbook reads folders, so these builders only write JSON, CSV, Markdown and PNG bytes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from paper import artifact_contract as c

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
# The 8-byte PNG signature plus an empty IHDR-shaped tail: enough to be "a PNG" on disk.
PNG_BYTES = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + b"\x00" * 17

GOOD_METRICS = {"total_return": 0.21, "cagr": 0.1, "sharpe": 1.4, "sortino": 2.0, "max_drawdown": 0.12,
                "win_rate": 0.6, "profit_factor": 1.8, "exposure": 0.5, "num_trades": 8, "num_fills": 16,
                "total_fees": 12.5, "final_equity": 12100.0, "bars": 300, "total_pnl": 2100.0,
                "ending_equity": 12100.0, "starting_cash": 10000.0, "halt": None}


def iso(t: datetime | None) -> str | None:
    return t.isoformat() if t is not None else None


@dataclass
class SessionSpec:
    """One session folder to write; `drop` names canonical files to leave out, `corrupt` to garble."""

    session_id: str
    status: str
    started_at: datetime | None
    status_reason: str = ""
    finished_at: datetime | None = None
    updated_at: datetime | None = None
    metrics: dict = field(default_factory=lambda: dict(GOOD_METRICS))
    error_type: str | None = None
    error_message: str | None = None
    metadata_session_id: str | None = None
    request_id: str = ""
    drop: tuple[str, ...] = ()
    corrupt: tuple[str, ...] = ()


def _dump(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def session_write(root: Path, spec: SessionSpec) -> Path:
    """Write one session folder the way paper/artifacts.py lays it out."""
    folder = root / spec.session_id
    (folder / c.ARTIFACTS_DIR).mkdir(parents=True, exist_ok=True)
    terminal = spec.status in c.TERMINAL
    created = spec.started_at or NOW - timedelta(hours=2)
    request_id = spec.request_id or f"req_{spec.session_id}"
    files: dict[str, bytes] = {}

    def put(name: str, obj) -> None:
        files[name] = (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()

    put(c.METADATA, {
        "schema_version": c.SCHEMA_VERSION, "session_id": spec.metadata_session_id or spec.session_id,
        "mode": "replay", "command": "run", "created_at": iso(created), "request_id": request_id,
        "bot_id": 7, "bot_name": "eth-sma", "strategy": "sma_crossover", "ticker": "ETH-USD",
        "timeframe": "1d", "data_source": "csv", "data_label": "ETH-USD 1d", "start": "2022-01-01",
        "end": "2023-12-31", "starting_cash": 10000.0, "seed": 42, "config_hash": "abc123",
        "host": "ops-box", "pid": 4242,
    })
    put(c.CONFIG, {"bot": {"strategy": "sma_crossover", "params": {"fast": 10, "slow": 30}},
                   "session": {"mode": "replay", "starting_cash": 10000.0}})
    duration = (spec.finished_at - spec.started_at).total_seconds() if spec.finished_at and spec.started_at else None
    put(c.STATUS, {
        "schema_version": c.SCHEMA_VERSION, "session_id": spec.session_id, "status": spec.status,
        "terminal": terminal, "status_reason": spec.status_reason, "started_at": iso(spec.started_at),
        "finished_at": iso(spec.finished_at), "duration_seconds": duration,
        "updated_at": iso(spec.updated_at or spec.finished_at or spec.started_at),
        "bars_processed": spec.metrics.get("bars", 0), "bars_total": 300,
        "error_type": spec.error_type, "error_message": spec.error_message,
    })
    # A running session has only written its start files; the rest arrive with the terminal status.
    if terminal:
        put(c.METRICS, spec.metrics)
        put(c.REPORT, {
            "machine_contract": {"contract_type": c.PAPER_CONTRACT_TYPE, "schema_version": c.SCHEMA_VERSION,
                                 "request_id": request_id},
            "session_id": spec.session_id, "status": spec.status, "status_reason": spec.status_reason,
            "terminal": True, "metrics": spec.metrics,
            "data": {"ticker": "ETH-USD", "timeframe": "1d", "start": "2022-01-01", "end": "2023-12-31",
                     "bars": spec.metrics.get("bars"), "label": "ETH-USD 1d"},
            "artifacts": {name: name for name in c.CANONICAL_FILES},
        })
        files[c.RUN_REPORT] = f"# Run report {spec.session_id}\n\n![equity]({c.EQUITY_PNG})\n".encode()
        files[c.TRADES] = (",".join(c.TRADES_COLUMNS) + "\n"
                           "f1,o1,ETH-USD,buy,1.0,1800.0,1.8,taker,2022-02-01T00:00:00+00:00,31\n").encode()
        files[c.EQUITY_PNG] = PNG_BYTES
        files[c.DRAWDOWN_PNG] = PNG_BYTES
    for name, data in files.items():
        if name in spec.drop:
            continue
        if name in spec.corrupt:
            data = b'{"status": "succ'
        (folder / name).write_bytes(data)
    return folder


def _at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


# The operator's mixed bag: one of every situation the runbook has to explain.
GOOD = "ps_20261120_0800_good"
WEAK = "ps_20261120_1000_weak"
FAILED = "ps_20261120_1200_failed"
KILLED = "ps_20261120_1400_killed"
HALTED = "ps_20261120_1600_halted"
NO_METRICS = "ps_20261120_1800_nometrics"
MISMATCH = "ps_20261120_2000_mismatch"
STALE = "ps_20261121_0800_stale"
CORRUPT = "ps_20261121_1000_corrupt"
FRESH = "ps_20261121_1130_fresh"

HALT_REASON = "risk_halt: drawdown 82.0% > limit 80.0%"

SPECS = (
    SessionSpec(GOOD, c.SUCCESS, _at(20, 8), "completed", finished_at=_at(20, 9, 2)),
    SessionSpec(WEAK, c.SUCCESS, _at(20, 10), "completed", finished_at=_at(20, 10, 45),
                metrics={**GOOD_METRICS, "sharpe": 0.12, "max_drawdown": 0.41, "num_trades": 5}),
    SessionSpec(FAILED, c.FAILED, _at(20, 12), "exception: ValueError", finished_at=_at(20, 12, 0) + timedelta(seconds=7),
                error_type="ValueError", error_message="no bars for ETH-USD in 2022-01-01..2023-12-31",
                metrics={"total_pnl": 0.0, "num_fills": 0, "starting_cash": 10000.0, "halt": None}),
    SessionSpec(KILLED, c.ABORTED, _at(20, 14), "kill_switch: armed by ops", finished_at=_at(20, 14, 20)),
    SessionSpec(HALTED, c.ABORTED, _at(20, 16), HALT_REASON, finished_at=_at(20, 16, 30),
                metrics={**GOOD_METRICS, "max_drawdown": 0.82,
                         "halt": {"rule": "max_drawdown_pct", "message": "drawdown 82.0% > limit 80.0%"}}),
    SessionSpec(NO_METRICS, c.SUCCESS, _at(20, 18), "completed", finished_at=_at(20, 19), drop=(c.METRICS,)),
    SessionSpec(MISMATCH, c.SUCCESS, _at(20, 20), "completed", finished_at=_at(20, 21),
                metadata_session_id="ps_somewhere_else"),
    SessionSpec(STALE, c.RUNNING, _at(21, 8), updated_at=NOW - timedelta(hours=3)),
    SessionSpec(CORRUPT, c.SUCCESS, _at(21, 10), "completed", finished_at=_at(21, 11), corrupt=(c.STATUS,)),
    SessionSpec(FRESH, c.RUNNING, NOW - timedelta(minutes=30), updated_at=NOW - timedelta(minutes=1)),
)
# Scan order: by started_at (created_at for the corrupt one), then id.
ORDER = [GOOD, WEAK, FAILED, KILLED, HALTED, NO_METRICS, MISMATCH, STALE, CORRUPT, FRESH]


def paper_root_build(root: Path, specs=SPECS) -> Path:
    """An artifact root holding `specs` (in the given creation order) plus index-looking clutter."""
    root.mkdir(parents=True, exist_ok=True)
    for spec in specs:
        session_write(root, spec)
    # Files in the root are never sessions, whatever they are called.
    (root / "README.txt").write_text("handed off by ops\n")
    return root
