"""`manage.py run`: paper-backed replays and research runs, with their artifacts and signals.

A paper replay is a PaperTradingRun (mode "replay") driven as fast as the engine goes through
the same engine, broker and risk as live sessions; a research run is a BacktestRun.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Literal

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bots.models import Bot
from bots.services import (
    MAX_SYNTHETIC_BARS,
    backtest_bars,
    backtest_run_with_result,
    bot_create,
    bot_get,
)
from config.errors import AppError
from ledger import services as ledger
from ledger.models import PaperTradingRun, RunStatus, new_run_id
from paper import artifact_contract as c
from paper import halts
from paper.artifacts import RunArtifacts, now_iso, ts_iso
from paper.demo import demo_bot_ensure
from paper.engine.bars import Bars
from paper.engine.botconfig import BotConfig
from risk.services import kill_switch_assert_armed

log = logging.getLogger(__name__)

CHUNK = 65_536  # bars per engine step: small enough to stop within ~0.1 s, big enough to be free
LEDGER_EQUITY_POINTS = 10_000  # a replay's equity curve in the ledger; the full curve is in the PNG


class RunRequestError(ValueError):
    """A bad run request: the command exits 2 and writes nothing."""


class RunParams(BaseModel):
    """The params of `run`, from flags or a --json-request. Unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", strict=True)

    ticker: str = Field("ETH-USD", min_length=1, max_length=32)
    start: date | None = None
    end: date | None = None
    paper: bool = False
    report: bool = False
    bot: str | None = Field(None, max_length=100)
    strategy: str | None = Field(None, max_length=200)
    params: dict = Field(default_factory=dict)
    timeframe: str = "1d"
    starting_cash: float = Field(100_000.0, gt=0, le=1e12, allow_inf_nan=False)
    seed: int = Field(0, ge=0, lt=2**63)
    data_source: Literal["stored", "synthetic"] = "stored"
    bars: int | None = Field(None, ge=1, le=MAX_SYNTHETIC_BARS, description="synthetic bar count")
    output_root: str | None = Field(None, min_length=1, max_length=4096)

    @field_validator("ticker", "bot", "strategy", "timeframe", "output_root")
    @classmethod
    def _printable(cls, value):
        # NUL reaches the database or the file system as an error, not as a refusal.
        if isinstance(value, str) and any(ch in value for ch in "\x00\r\n"):
            raise ValueError("must not contain NUL or line breaks")
        return value

    @field_validator("start", "end", mode="before")
    @classmethod
    def _date(cls, value):
        if isinstance(value, str):
            try:
                return date.fromisoformat(value)
            except ValueError:
                raise ValueError(f"not a date (YYYY-MM-DD): {value!r}") from None
        return value


class JsonRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    schema_version: Literal["1.0"]
    request_id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
    command: Literal["run"]
    params: RunParams


def _errors_text(exc: ValidationError, prefix: str = "") -> str:
    parts = []
    for e in exc.errors():
        loc = ".".join(str(p) for p in e["loc"])
        parts.append(f"{prefix}{loc}: {e['msg']}" if loc else e["msg"])
    return "; ".join(parts)


MAX_JSON_REQUEST = 1_000_000  # characters: a run request is a few hundred


def parse_json_request(text: str) -> JsonRequest:
    if len(text) > MAX_JSON_REQUEST:
        raise RunRequestError(f"--json-request is too large: {len(text):,} characters, at most {MAX_JSON_REQUEST:,}")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RunRequestError(f"--json-request is not valid JSON: {exc}") from None
    except RecursionError:
        raise RunRequestError("--json-request is not valid JSON: nested too deeply") from None
    if not isinstance(raw, dict):
        raise RunRequestError("--json-request must be a JSON object")
    if raw.get("schema_version") not in (None, "1.0") and "schema_version" in raw:
        raise RunRequestError(f"unsupported schema_version {raw['schema_version']!r}; this build speaks '1.0'")
    if "command" in raw and raw["command"] != "run":
        raise RunRequestError(f"unknown command {raw['command']!r}; the only command is 'run'")
    try:
        # Dates come as strings in JSON: validate params in lax mode for them only.
        params = raw.get("params")
        if isinstance(params, dict):
            for key in ("start", "end"):
                if isinstance(params.get(key), str):
                    params = {**params, key: RunParams._date(params[key])}
            raw = {**raw, "params": params}
        return JsonRequest.model_validate(raw)
    except (ValidationError, ValueError) as exc:
        text = _errors_text(exc) if isinstance(exc, ValidationError) else str(exc)
        raise RunRequestError(f"invalid --json-request: {text}") from None


# --- signals ------------------------------------------------------------------------------------

def _writable_target(path: Path, *, what: str, folder: bool) -> None:
    """Refuse (RunRequestError) a folder or file that could not be written, before anything is.

    The target may not exist yet: its nearest existing ancestor must then be a writable folder.
    """
    text = str(path)
    if "\x00" in text:
        raise RunRequestError(f"{what} {text!r} contains a NUL character")
    try:
        if path.exists() or path.is_symlink():
            if folder and not path.is_dir():
                raise RunRequestError(f"{what} {text} is not a folder")
            if not folder and path.is_dir():
                raise RunRequestError(f"{what} {text} is a folder, not a file")
            if not folder and not path.exists():
                raise RunRequestError(f"{what} {text} is a broken symlink")
            if not os.access(path, os.W_OK | (os.X_OK if folder else 0)):
                raise RunRequestError(f"{what} {text} is not writable")
            return
        parent = path.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise RunRequestError(f"{what} {text} cannot be created: {parent} is not a folder")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise RunRequestError(f"{what} {text} cannot be created: {parent} is not writable")
    except OSError as exc:  # a symlink loop, a name too long, ...
        raise RunRequestError(f"{what} {text} cannot be used: {exc.strerror or exc}") from None


@dataclass
class SignalFile:
    path: Path | None

    def check(self) -> None:
        """Refuse a signal file that could not be appended to, before the run writes anything."""
        if self.path is not None:
            _writable_target(self.path, what="--signal-file", folder=False)

    def emit(self, event: str, **fields) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"timestamp": now_iso(), "event": event, "mode": "run", **fields}, sort_keys=True, default=str)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")


# --- interruption --------------------------------------------------------------------------------

@dataclass
class StopFlag:
    """Set by SIGTERM / SIGINT (the command's handlers) or the kill switch (a push)."""

    reason: str = ""
    event: threading.Event = field(default_factory=threading.Event)

    def set(self, reason: str) -> None:
        self.reason = self.reason or reason
        self.event.set()

    def install_signal_handlers(self) -> Callable[[], None]:
        previous = {}

        def handler(signum, _frame):
            self.set("sigterm: terminated" if signum == signal.SIGTERM else "sigint: interrupted (Ctrl-C)")

        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, handler)

        def restore() -> None:
            for sig, prev in previous.items():
                signal.signal(sig, prev)

        return restore


# --- resolving what to run ------------------------------------------------------------------------

def _resolve_bot(params: RunParams) -> Bot:
    if params.bot:
        bot = bot_get(bot_ref=params.bot)
        if params.ticker not in bot.symbols:
            raise AppError("bad_ticker", f"{params.ticker!r} is not one of bot {bot.name!r}'s symbols {bot.symbols}")
        return bot
    if params.strategy:
        config = BotConfig.validate(strategy=params.strategy, params=params.params, symbols=[params.ticker],
                                    timeframe=params.timeframe)
        name = f"run-{config.strategy.split(':')[-1].split('.')[-1]}-{config.config_hash[:10]}"
        return Bot.objects.filter(name=name).first() or bot_create(
            name=name, strategy=config.strategy, params=config.params, symbols=[params.ticker],
            timeframe=params.timeframe)
    bot, _ = demo_bot_ensure()
    if params.ticker not in bot.symbols:
        raise AppError("bad_ticker", f"the demo bot trades {bot.symbols}; pass --bot or --strategy for {params.ticker!r}")
    return bot


def _ensure_sample_data(params: RunParams) -> None:
    """Load the shipped sample data when the store has nothing for the ticker, so the
    runbook's command works out of the box on a fresh database."""
    from paper.selectors import bars_available
    from paper.services import sample_data_load

    if params.data_source == "stored" and not any(b["symbol"] == params.ticker for b in bars_available()):
        sample_data_load()


def _bars(params: RunParams, bot: Bot) -> Bars:
    return backtest_bars(bot=bot, symbol=params.ticker, start=params.start, end=params.end,
                         data_source=params.data_source, seed=params.seed, synthetic_count=params.bars)


def output_root(params: RunParams, *, paper: bool) -> Path:
    if params.output_root:
        return Path(params.output_root)
    return settings.OUTPUTS_DIR / ("paper_sessions" if paper else "runs")


def validate_params(params: RunParams, signals: SignalFile | None = None) -> tuple[Bot, Bars]:
    """Everything that can be refused is refused here, before anything is written."""
    if params.start and params.end and params.start > params.end:
        raise RunRequestError(f"start {params.start} is after end {params.end}")
    # Where the run will write: a run that could not write its folder or its signal lines would
    # fail after its row exists (it stayed "running" for ever), so they are checked first.
    _writable_target(output_root(params, paper=params.paper), what="the artifact root", folder=True)
    if signals is not None:
        signals.check()
    try:
        # One transaction: a bot made for --strategy (or the demo bot) is only kept when the
        # whole request is valid, so a refused request leaves nothing behind.
        with transaction.atomic():
            _ensure_sample_data(params)
            bot = _resolve_bot(params)
            bars = _bars(params, bot)
    except AppError as exc:
        raise RunRequestError(exc.message) from None
    except ValueError as exc:
        raise RunRequestError(str(exc)) from None
    if len(bars) == 0:
        raise RunRequestError(f"no bars for {params.ticker} {bot.timeframe} in the chosen range")
    return bot, bars


# --- the paper replay --------------------------------------------------------------------------------

@dataclass
class RunOutcome:
    run_id: str
    status: str
    status_reason: str
    artifact_dir: Path
    metrics: dict
    paper: bool


def _data(bars: Bars) -> dict:
    return {"ticker": bars.symbol, "timeframe": bars.timeframe, "source": bars.source, "label": bars.label,
            "start": ts_iso(bars.ts[0])[:10], "end": ts_iso(bars.ts[-1])[:10], "bars": len(bars)}


def paper_replay(*, params: RunParams, request_id: str = "", signals: SignalFile | None = None,
                 stop: StopFlag | None = None, progress_factory=None) -> RunOutcome:
    """Replay bars through the engine as a paper session, writing the ledger and artifacts."""
    signals = signals or SignalFile(None)
    stop = stop or StopFlag()
    kill_switch_assert_armed()
    bot, bars = validate_params(params, signals)
    config = bot.trading_config()
    root = output_root(params, paper=True)
    run = ledger.run_create(
        bot=bot, starting_cash=params.starting_cash, symbol=params.ticker, timeframe=bot.timeframe,
        data_source=bars.source if bars.source != "csv" else "stored", seed=params.seed,
        config_snapshot={**config.canonical(), "run": params.model_dump(mode="json")},
        config_hash=config.config_hash, mode="replay", request_id=request_id,
    )
    ledger.run_mark_running(run=run)
    artifacts = RunArtifacts(root, run.id)
    metadata = {
        "mode": "replay", "request_id": request_id, "bot_id": bot.pk, "bot_name": bot.name,
        "strategy": config.strategy, "ticker": params.ticker, "timeframe": bot.timeframe,
        "data_source": bars.source, "data_label": bars.label, "start": _data(bars)["start"],
        "end": _data(bars)["end"], "starting_cash": params.starting_cash, "seed": params.seed,
        "config_hash": config.config_hash,
    }
    artifacts.start(metadata=metadata, config={**config.canonical(), "run": params.model_dump(mode="json")},
                    bars_total=len(bars), started_at=run.started_at.isoformat())
    signals.emit("started", request_id=request_id, session_id=run.id, paper=True,
                 artifact_dir=str(artifacts.dir), status=c.RUNNING)
    kill = halts.session_event(run.id)
    progress = progress_factory(len(bars)) if progress_factory is not None else None
    engine = None
    writer = _ReplayLedger(run, n_bars=len(bars))
    status, reason, error_type, error_message = RunStatus.SUCCESS, "completed", "", ""
    try:
        engine = config.build_engine(starting_cash=params.starting_cash, seed=params.seed, symbol=params.ticker)
        engine.preload(bars)  # all bars are known: indicators are computed once
        last_beat = time.monotonic()
        for lo in range(0, len(bars), CHUNK):
            if kill.is_set():
                stop.set(kill.reason or "kill_switch: stopped")
            if stop.event.is_set():
                break
            engine.advance(CHUNK)
            if progress is not None:
                progress.update(min(CHUNK, len(bars) - lo))
            # Each chunk goes to the ledger as it is stepped, under the run's row lock: a stop
            # (the kill switch, stop-all) that closed the run refuses it, and the ones after.
            try:
                writer.write(engine)
            except ledger.RunClosed:
                break
            if time.monotonic() - last_beat >= 1.0:
                last_beat = time.monotonic()
                artifacts.heartbeat(bars_processed=engine.bars_processed)
            if engine.status != "running":
                break
        if writer.closed:
            pass  # the stop's status and reason stand; the engine is rebuilt below at the ledger's bar
        elif stop.event.is_set():
            engine.stop(stop.reason)
            status, reason = RunStatus.ABORTED, stop.reason
        elif engine.status == "halted":
            status, reason = RunStatus.ABORTED, f"{c.REASON_RISK_HALT}: {engine.halt.message}"
    except Exception as exc:  # the run fails, but its folder and row still say so
        log.exception("replay %s failed", run.id)
        status, reason = RunStatus.FAILED, f"exception: {type(exc).__name__}"
        error_type, error_message = type(exc).__name__, str(exc)[:2000]
    finally:
        halts.session_event_drop(run.id)
        if progress is not None:
            progress.close()
    result = None
    if engine is not None:
        if not writer.closed:
            try:
                writer.write(engine, final=True)
            except ledger.RunClosed:
                pass
        if writer.closed:
            # A stop closed the run: what the replay reports is the ledger as of its last accepted
            # chunk, so the engine is stepped again to exactly there and stopped as the stop says.
            closed = PaperTradingRun.objects.filter(pk=run.pk).values_list("bars_processed", "status_reason").get()
            engine = config.build_engine(starting_cash=params.starting_cash, seed=params.seed, symbol=params.ticker)
            engine.preload(bars)
            engine.advance(closed[0])
            engine.stop(closed[1])
        result = engine.result()
        final = ledger.run_finish(run_id=run.pk, result=result, status=status, status_reason=reason,
                                  error_type=error_type, error_message=error_message, new_fills=[],
                                  changed_orders=None if writer.closed else [])
        status, reason = final.status, final.status_reason
    else:
        with transaction.atomic():
            row = PaperTradingRun.objects.select_for_update().get(pk=run.pk)
            if not row.is_terminal:
                PaperTradingRun.objects.filter(pk=run.pk).update(
                    status=status, status_reason=reason[:200], error_type=error_type, error_message=error_message,
                    ended_at=timezone.now())
            else:
                status, reason = row.status, row.status_reason
    run.refresh_from_db()
    extra = {"total_pnl": run.total_pnl, "ending_equity": run.ending_equity, "starting_cash": run.starting_cash,
             "halt": run.halt, "num_fills": run.num_fills}
    artifacts.finish(status=status, status_reason=reason, result=result, request_id=request_id,
                     contract_type=c.PAPER_CONTRACT_TYPE, data=_data(bars), extra_metrics=extra,
                     error_type=error_type, error_message=error_message, title=f"{bot.name} {bars.label}")
    paper_index_refresh(root)
    event = {RunStatus.SUCCESS: "completed", RunStatus.FAILED: "failed"}.get(status, "aborted")
    signals.emit(event, request_id=request_id, session_id=run.id, paper=True, status=status, status_reason=reason,
                 artifact_dir=str(artifacts.dir),
                 artifacts={k: str(artifacts.dir / v) for k, v in artifacts.relative_paths().items()})
    return RunOutcome(run.id, status, reason, artifacts.dir, {**(result.metrics if result else {}), **extra}, True)


class _ReplayLedger:
    """What a replay has written to the ledger so far, and the next chunk's rows.

    The equity curve is thinned evenly to LEDGER_EQUITY_POINTS (plus each chunk's last bar, the
    ledger's checkpoint); the artifacts keep the full curve.
    """

    def __init__(self, run: PaperTradingRun, *, n_bars: int):
        self.run = run
        self.stride = max(1, -(-n_bars // LEDGER_EQUITY_POINTS))
        self.fills = 0
        self.bars = 0
        self.order_state: dict[str, tuple] = {}
        self.closed = False

    def write(self, engine, *, final: bool = False) -> None:
        broker = engine.broker
        n = engine.bars_processed
        if n == self.bars and not final:
            return
        changed = [o for o in broker.orders if self.order_state.get(o.client_order_id) != (o.status, o.filled_qty)]
        first = -(-self.bars // self.stride) * self.stride
        positions = [*range(first, n, self.stride)]
        if n and (not positions or positions[-1] != n - 1):
            positions.append(n - 1)
        points = engine.points(positions)
        try:
            ledger.replay_chunk_persist(
                run_id=self.run.pk, fills=broker.fills[self.fills:], orders=changed, points=points, bars_processed=n,
                ending_equity=points[-1][2] if points else self.run.starting_cash, starting_cash=self.run.starting_cash)
        except ledger.RunClosed:
            self.closed = True
            raise
        self.fills, self.bars = len(broker.fills), n
        for o in changed:
            self.order_state[o.client_order_id] = (o.status, o.filled_qty)


_index_state = threading.Lock()
_index_running: set[str] = set()
_index_dirty: set[str] = set()
# Per root: the session records of the last refresh, re-read only where a folder changed.
_index_caches: dict[str, dict] = {}


def paper_index_refresh(root: Path) -> None:
    """Refresh paper_sessions_index.* after a run ends; a failure here never fails the run.

    A refresh lists the whole root and re-reads only the folders that changed since this
    process's last refresh. When many sessions end at once (a kill switch) the requests are
    coalesced per process: one refresh runs, and runs once more if asked meanwhile.
    """
    from paper.runbook import index_write

    key = str(Path(root).resolve())
    with _index_state:
        if key in _index_running:
            _index_dirty.add(key)
            return
        _index_running.add(key)
    try:
        while True:
            try:
                index_write(Path(root), cache=_index_caches.setdefault(key, {}))
            except Exception:
                log.exception("could not refresh the paper-session index in %s", root)
            with _index_state:
                if key in _index_dirty:
                    _index_dirty.discard(key)
                    continue
                _index_running.discard(key)
                return
    except BaseException:
        with _index_state:
            _index_running.discard(key)
        raise


# --- research runs ----------------------------------------------------------------------------------------

def research_run(*, params: RunParams, request_id: str = "", signals: SignalFile | None = None) -> RunOutcome:
    """A backtest with artifacts under outputs/runs/<run_id>/ and a refreshed runs_index.*."""
    signals = signals or SignalFile(None)
    bot, bars = validate_params(params, signals)
    root = output_root(params, paper=False)
    run_id = new_run_id()
    signals.emit("started", request_id=request_id, run_id=run_id, paper=False, artifact_dir=str(root / run_id),
                 status=c.RUNNING)
    config = bot.trading_config()
    artifacts = RunArtifacts(root, run_id)
    artifacts.start(metadata={"mode": "research", "request_id": request_id, "bot_id": bot.pk, "bot_name": bot.name,
                              "strategy": config.strategy, "ticker": params.ticker, "timeframe": bot.timeframe,
                              "data_source": bars.source, "data_label": bars.label, **_data(bars),
                              "starting_cash": params.starting_cash, "seed": params.seed,
                              "config_hash": config.config_hash},
                    config={**config.canonical(), "run": params.model_dump(mode="json")}, bars_total=len(bars))
    backtest, result = backtest_run_with_result(bot=bot, bars=bars, seed=params.seed,
                                                starting_cash=params.starting_cash)
    status = RunStatus.SUCCESS if result.status == "completed" else RunStatus.ABORTED
    reason = "completed" if status == RunStatus.SUCCESS else f"{c.REASON_RISK_HALT}: {result.halt.message}"
    extra = {"total_pnl": result.total_pnl, "ending_equity": result.final_equity,
             "starting_cash": params.starting_cash, "halt": result.halt.to_dict() if result.halt else None,
             "backtest_id": backtest.pk}
    artifacts.finish(status=status, status_reason=reason, result=result, request_id=request_id,
                     contract_type=c.RUN_CONTRACT_TYPE, data=_data(bars), extra_metrics=extra,
                     title=f"{bot.name} {bars.label}")
    runs_index_write(root)
    signals.emit("completed" if status == RunStatus.SUCCESS else "aborted", request_id=request_id, run_id=run_id,
                 paper=False, status=status, status_reason=reason, artifact_dir=str(artifacts.dir),
                 artifacts={k: str(artifacts.dir / v) for k, v in artifacts.relative_paths().items()})
    return RunOutcome(run_id, status, reason, artifacts.dir, {**result.metrics, **extra}, False)


def runs_index_write(root: Path) -> None:
    """outputs/runs/runs_index.csv and .json: one row per research run folder.

    Folders and files are read as every artifact read back is (paper/artifact_files.py: no link
    followed, regular files only, bounded); the CSV's text cells are formula-safe."""
    from paper import artifact_files as af
    from paper.artifacts import _atomic_write, write_json
    from paper.runbook import csv_cell

    rows = []
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir() and not p.is_symlink()):
        try:
            report = json.loads(af.read_file(folder, c.REPORT).decode("utf-8"))
            meta = json.loads(af.read_file(folder, c.METADATA).decode("utf-8"))
            if not isinstance(report, dict) or not isinstance(meta, dict):
                raise ValueError("not an object")
        except (OSError, ValueError, RecursionError):
            rows.append({"run_id": folder.name, "status": "unknown", "issue": "unreadable report"})
            continue
        m = report.get("metrics", {}) if isinstance(report.get("metrics"), dict) else {}
        rows.append({"run_id": folder.name, "status": report.get("status"), "ticker": meta.get("ticker"),
                     "strategy": meta.get("strategy"), "bot_name": meta.get("bot_name"), "start": meta.get("start"),
                     "end": meta.get("end"), "total_return": m.get("total_return"), "sharpe": m.get("sharpe"),
                     "max_drawdown": m.get("max_drawdown"), "num_trades": m.get("num_trades"), "issue": ""})
    columns = ["run_id", "status", "ticker", "strategy", "bot_name", "start", "end", "total_return", "sharpe",
               "max_drawdown", "num_trades", "issue"]
    text = af.csv_line(columns) + "".join(af.csv_line([csv_cell(row.get(col)) for col in columns]) for row in rows)
    _atomic_write(Path(root) / c.RUNS_INDEX_CSV, text.encode())
    write_json(Path(root) / c.RUNS_INDEX_JSON, {"root": str(root), "runs": rows})
