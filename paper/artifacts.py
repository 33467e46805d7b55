"""Writing a run's artifact folder (paper sessions and research runs) per the contract.

Every file is written atomically (temp file + rename), so a reader never sees half a file, and
readable as the umask says (artifact_files.atomic_write); a file is read back only through
artifact_files (a regular file, no link followed).
"""
from __future__ import annotations

import gc
import io
import json
import logging
import os
import socket
import threading
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from paper import artifact_contract as c
from paper import artifact_files as af

MAX_PLOT_POINTS = 4000
# The one writer of artifact files (paper/replay.py imports it under this name, from here).
_atomic_write = af.atomic_write
log = logging.getLogger(__name__)


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _is_time(value) -> bool:
    try:
        datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return False
    return True


def _seconds_between(started, finished: str) -> float:
    """finished - started in seconds; 0 when `started` (read back from a status file) is not a time."""
    try:
        start = datetime.fromisoformat(started)
        end = datetime.fromisoformat(finished)
        return (end - start).total_seconds()
    except (TypeError, ValueError, OverflowError):
        return 0.0


def ts_iso(ts: int) -> str:
    return datetime.fromtimestamp(int(ts), UTC).isoformat()


def write_json(path: Path, obj) -> None:
    _atomic_write(path, (json.dumps(obj, indent=2, sort_keys=True, default=str, allow_nan=False) + "\n").encode())


def trades_csv_bytes(fills) -> bytes:
    """One row per fill, the same values paper_fills holds (floats as repr, so exact). Text cells
    (ids, symbol, side, liquidity) are formula-safe: one a spreadsheet would run gets a leading ',
    and one holding a CR or a newline is quoted (artifact_files.csv_line)."""
    text = af.formula_safe
    lines = [af.csv_line(c.TRADES_COLUMNS)]
    for f in fills:
        lines.append(af.csv_line([
            text(str(f.fill_id)), text(str(f.client_order_id)), text(str(f.symbol)), text(str(f.side)),
            repr(f.qty), repr(f.price), repr(f.fee), text(str(f.liquidity)), ts_iso(f.ts), str(f.bar_index)]))
    return "".join(lines).encode()


# One chart at a time per process: rendering holds the GIL, so charts drawn in parallel threads
# took as long in all, and a figure's garbage must be alone in the young generation (below).
_render_lock = threading.Lock()


def _plot(ts: np.ndarray, values: np.ndarray, *, title: str, ylabel: str, fill_below: bool = False) -> bytes:
    """A chart as PNG bytes, its garbage collected while it is young.

    A matplotlib figure is thousands of objects in reference cycles, which only the cyclic
    collector frees. Left to it, rendering promoted them to the oldest generation, and a
    worker's full collections each freed dozens of charts at once: 150-280 ms with every
    session thread in the process stopped (measured with gc.callbacks during
    bench/killswitch.py). With automatic collection paused while one chart renders, its objects stay in
    the youngest generation, and one collection of that generation frees them: ~2 ms.
    """
    with _render_lock:
        resume = gc.isenabled()
        gc.disable()
        try:
            png = _render(ts, values, title=title, ylabel=ylabel, fill_below=fill_below)
        finally:
            if resume:
                gc.enable()
        gc.collect(0)
        return png


def _render(ts: np.ndarray, values: np.ndarray, *, title: str, ylabel: str, fill_below: bool = False) -> bytes:
    # The object API (no pyplot): safe to call from worker threads. Fixed margins and concise
    # date labels instead of tight_layout and autofmt_xdate, and fast PNG compression: ~45 ms a
    # chart instead of ~80 (two charts were most of a short session's worker CPU).
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure

    step = max(1, len(values) // MAX_PLOT_POINTS)
    x = ts[::step].astype("datetime64[s]")
    y = values[::step]
    fig = Figure(figsize=(9, 3.2), dpi=100)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.09, right=0.98, top=0.9, bottom=0.2)
    ax = fig.add_subplot()
    if len(y):
        ax.plot(x, y, linewidth=1.0, color="#2563eb" if not fill_below else "#dc2626")
        if fill_below:
            ax.fill_between(x, y, 0, color="#dc2626", alpha=0.2)
    if len(y) > 1:  # one point has no date range to place ticks in
        locator = AutoDateLocator(maxticks=8)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", pil_kwargs={"compress_level": 1})
    return buf.getvalue()


def drawdown_curve(equity: np.ndarray, starting_cash: float) -> np.ndarray:
    if len(equity) == 0:
        return equity
    peak = np.maximum.accumulate(np.concatenate([[starting_cash], equity]))[1:]
    return (equity / peak - 1.0) * 100


class RunArtifacts:
    """The folder of one run: `<root>/<run_id>/`."""

    def __init__(self, root: Path, run_id: str):
        self.root = Path(root)
        self.run_id = run_id
        self.dir = self.root / run_id
        self._status: dict = {}

    def path(self, name: str) -> Path:
        return self.dir / name

    def target(self, name: str) -> Path:
        """Where `name` is written. A session folder (or a folder inside it) that is a link is
        refused (artifact_files.Refused): writes never follow a link out of the root."""
        folder = self.dir
        for part in (None, *Path(name).parts[:-1]):
            folder = folder if part is None else folder / part
            if folder.is_symlink():
                raise af.Refused(f"{folder} is a symlink; nothing is written through it")
        return self.dir / name

    def relative_paths(self) -> dict[str, str]:
        return {name: name for name in c.CANONICAL_FILES}

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, *, metadata: dict, config: dict, bars_total: int, started_at: str | None = None) -> None:
        self.target(c.METADATA)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / c.ARTIFACTS_DIR).mkdir(exist_ok=True)
        write_json(self.target(c.METADATA), {
            "schema_version": c.SCHEMA_VERSION, "session_id": self.run_id, "command": "run",
            "created_at": now_iso(), "host": socket.gethostname(), "pid": os.getpid(), **metadata,
        })
        write_json(self.target(c.CONFIG), config)
        started = started_at or now_iso()
        self._status = {
            "schema_version": c.SCHEMA_VERSION, "session_id": self.run_id, "status": c.RUNNING, "terminal": False,
            "status_reason": "", "started_at": started, "finished_at": None, "duration_seconds": None,
            "updated_at": started, "bars_processed": 0, "bars_total": bars_total, "error_type": None,
            "error_message": None,
        }
        write_json(self.target(c.STATUS), self._status)

    def heartbeat(self, *, bars_processed: int) -> None:
        if not self._status:
            return
        self._status.update(updated_at=now_iso(), bars_processed=bars_processed)
        write_json(self.target(c.STATUS), self._status)

    def mark_terminal(self, *, status: str, status_reason: str, bars_processed: int,
                      error_type: str = "", error_message: str = "") -> None:
        """Only the status file, at once (cheap); the full finish may follow later."""
        finished = now_iso()
        started = self._status.get("started_at") or finished
        duration = _seconds_between(started, finished)
        self._status.update(status=status, terminal=True, status_reason=status_reason, finished_at=finished,
                            duration_seconds=round(duration, 3), updated_at=finished, bars_processed=bars_processed,
                            error_type=error_type or None, error_message=error_message or None)
        write_json(self.target(c.STATUS), self._status)

    def incidents_set(self, incidents: list[dict]) -> None:
        """Record the faults the session recovered from (status.json `incidents`)."""
        if not self._status:
            return
        self._status["incidents"] = incidents
        write_json(self.target(c.STATUS), self._status)

    def load_status(self) -> None:
        """Pick up an existing status file (a later process finishing this folder)."""
        # A damaged file (garbage, a list, nesting deep enough to exhaust the parser, a symlink
        # loop) is replaced by the status written next, never a reason to fail the session's end.
        # It is read as every read back is (artifact_files): a symlink, a FIFO or an oversized
        # file in its place is damage too, never followed, waited on or read whole.
        try:
            status = json.loads(af.read_file(self.dir, c.STATUS).decode("utf-8"))
        except (OSError, ValueError, RecursionError):
            status = {}
        self._status = status if isinstance(status, dict) else {}

    def finish(
        self,
        *,
        status: str,
        status_reason: str,
        result,
        request_id: str,
        contract_type: str,
        data: dict,
        extra_metrics: dict,
        error_type: str = "",
        error_message: str = "",
        title: str = "",
    ) -> None:
        """Write metrics, trades, charts, reports and the terminal status (last)."""
        metrics = dict(result.metrics) if result is not None else {}
        metrics.update(extra_metrics)
        write_json(self.target(c.METRICS), metrics)
        fills = result.fills if result is not None else []
        _atomic_write(self.target(c.TRADES), trades_csv_bytes(fills))
        equity = result.equity if result is not None else np.zeros(0)
        ts = result.ts if result is not None else np.zeros(0, dtype=np.int64)
        starting_cash = result.starting_cash if result is not None else extra_metrics.get("starting_cash", 0.0)
        # A chart that cannot be drawn or written costs that chart only: the reports and the
        # terminal status below are still written, and report.json says which chart is missing.
        charts = {
            c.EQUITY_PNG: lambda: _plot(ts, equity, title=f"{title} equity", ylabel="equity"),
            c.DRAWDOWN_PNG: lambda: _plot(ts, drawdown_curve(equity, starting_cash), title=f"{title} drawdown",
                                          ylabel="drawdown %", fill_below=True),
        }
        chart_errors = {}
        for name, draw in charts.items():
            try:
                _atomic_write(self.target(name), draw())
            except Exception as exc:
                log.exception("session %s: chart %s not written", self.run_id, name)
                chart_errors[name] = f"{type(exc).__name__}: {exc}"[:300]
        finished = self._status.get("finished_at") if self._status.get("terminal") else None
        finished = finished if _is_time(finished) else now_iso()
        started = self._status.get("started_at") or finished
        duration = _seconds_between(started, finished)
        report = {
            "machine_contract": {"contract_type": contract_type, "schema_version": c.SCHEMA_VERSION,
                                 "request_id": request_id},
            "session_id": self.run_id,
            "status": status,
            "status_reason": status_reason,
            "terminal": True,
            "metrics": metrics,
            "data": data,
            "artifacts": self.relative_paths(),
            "error": {"type": error_type, "message": error_message} if error_type else None,
        }
        if chart_errors:
            report["chart_errors"] = chart_errors
        write_json(self.target(c.REPORT), report)
        _atomic_write(self.target(c.RUN_REPORT), run_report_md(self.run_id, report, duration).encode())
        self._status.update(
            status=status, terminal=True, status_reason=status_reason, finished_at=finished,
            duration_seconds=round(duration, 3), updated_at=finished,
            bars_processed=len(equity), error_type=error_type or None, error_message=error_message or None,
        )
        write_json(self.target(c.STATUS), self._status)


def _fmt(value, kind: str = "num") -> str:
    if value is None:
        return "n/a"
    if kind == "pct":
        return f"{value * 100:.2f}%"
    if kind == "money":
        return f"{value:,.2f}"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def run_report_md(run_id: str, report: dict, duration: float) -> str:
    m = report["metrics"]
    d = report["data"]
    synthetic = " (synthetic data)" if d.get("source") == "synthetic" else ""
    lines = [
        f"# Run report {run_id}",
        "",
        f"- status: **{report['status']}** ({report['status_reason'] or 'n/a'})",
        f"- contract: `{report['machine_contract']['contract_type']}` schema {report['machine_contract']['schema_version']}, "
        f"request id `{report['machine_contract']['request_id'] or '-'}`",
        f"- data: {d.get('label', '')}{synthetic}, {d.get('start')} .. {d.get('end')}, {d.get('bars')} bars",
        f"- duration: {duration:.2f} s",
        "",
        "| metric | value |",
        "|---|---|",
        f"| total return | {_fmt(m.get('total_return'), 'pct')} |",
        f"| CAGR | {_fmt(m.get('cagr'), 'pct')} |",
        f"| sharpe | {_fmt(m.get('sharpe'))} |",
        f"| sortino | {_fmt(m.get('sortino'))} |",
        f"| max drawdown | {_fmt(m.get('max_drawdown'), 'pct')} |",
        f"| trades | {_fmt(m.get('num_trades'))} |",
        f"| win rate | {_fmt(m.get('win_rate'), 'pct')} |",
        f"| profit factor | {_fmt(m.get('profit_factor'))} |",
        f"| exposure | {_fmt(m.get('exposure'), 'pct')} |",
        f"| fills | {_fmt(m.get('num_fills'))} |",
        f"| fees | {_fmt(m.get('total_fees'), 'money')} |",
        f"| total P&L | {_fmt(m.get('total_pnl'), 'money')} |",
        f"| final equity | {_fmt(m.get('final_equity'), 'money')} |",
        "",
        "## Equity",
        "",
        f"![equity]({c.EQUITY_PNG})",
        "",
        "## Drawdown",
        "",
        f"![drawdown]({c.DRAWDOWN_PNG})",
        "",
        f"Trades: [`{c.TRADES}`]({c.TRADES}). Machine-readable result: [`{c.REPORT}`]({c.REPORT}).",
        "",
    ]
    if m.get("halt"):
        lines.insert(3, f"- risk halt: {m['halt'].get('message')}")
    return "\n".join(lines)
