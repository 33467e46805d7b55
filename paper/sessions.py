"""Live paper sessions: start (kill switch, gate), the paced loop, stop, resume and sweep.

A session is one Dramatiq actor running `session_execute`. Each bar goes strategy -> risk ->
broker (the engine) -> ledger (one transaction) -> frames, and the heartbeat stays current.
"""
from __future__ import annotations

import logging
import math
import os
import random
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import F, Max
from django.utils import timezone

from bots.models import Bot
from bots.services import paper_gate_check
from config.errors import AppError, Conflict, NotFound
from ledger import selectors as ledger_selectors
from ledger import services as ledger
from ledger.models import (  # noqa: F401 - the reason codes are re-exported for callers of this module
    REASON_BROKER_UNAVAILABLE,
    REASON_COMPLETED,
    REASON_EXCEPTION,
    REASON_KILL_SWITCH,
    REASON_OPERATOR_STOP,
    REASON_RESUME_MISMATCH,
    REASON_RISK_HALT,
    REASON_WORKER_LOST,
    PaperFill,
    PaperFrame,
    PaperTradingRun,
    RunStatus,
)
from paper import artifact_contract, halts
from paper.artifacts import RunArtifacts, ts_iso
from paper.engine.bars import Bars, timeframe_seconds
from paper.engine.botconfig import BotConfig
from paper.engine.engine import HALTED, Engine
from paper.engine.synthetic import synthetic_bars
from paper.frames import frames_publish
from risk.services import kill_switch_assert_armed

log = logging.getLogger(__name__)


TERMINAL_STAGES = {
    RunStatus.SUCCESS: "session.completed",
    RunStatus.ABORTED: "session.stopped",
    RunStatus.FAILED: "session.failed",
}
ACTIVE = (RunStatus.QUEUED, RunStatus.RUNNING)
MAX_BARS = 100_000


@dataclass(frozen=True)
class SessionRequest:
    starting_cash: float
    duration_minutes: float
    symbol: str | None = None
    pace: float = 1.0
    data_source: str = "synthetic"
    seed: int | None = None
    start: date | None = None
    warmup_bars: int | None = None


def _bad(code: str, message: str, field: str) -> AppError:
    return AppError(code, message, status=422, details=[{"field": field, "message": message}])


def _finite_positive(value, field: str, upper: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise _bad("invalid_session", f"{field} must be a positive number", field)
    if value > upper:
        raise _bad("invalid_session", f"{field} must be at most {upper:g}", field)
    return float(value)


def _plan(*, bot_config: BotConfig, request: SessionRequest, now: datetime) -> dict:
    """The session's immutable plan (stored in the run's config snapshot; resume reads it)."""
    _finite_positive(request.starting_cash, "starting_cash", 1e12)
    _finite_positive(request.duration_minutes, "duration_minutes", 60 * 24 * 31)
    _finite_positive(request.pace, "pace", 1e6)
    if request.data_source not in ("synthetic", "stored"):
        raise _bad("invalid_session", "data_source must be 'synthetic' or 'stored'", "data_source")
    symbol = request.symbol or bot_config.symbols[0]
    if symbol not in bot_config.symbols:
        raise _bad("invalid_session", f"symbol {symbol!r} is not one of the bot's symbols {list(bot_config.symbols)}", "symbol")
    warmup = settings.PAPER_WARMUP_BARS if request.warmup_bars is None else request.warmup_bars
    if isinstance(warmup, bool) or not isinstance(warmup, int) or not 0 <= warmup <= 10_000:
        raise _bad("invalid_session", "warmup_bars must be an integer from 0 to 10000", "warmup_bars")
    interval = settings.PAPER_BAR_INTERVAL_SECONDS
    n_bars = max(1, round(request.duration_minutes * 60 / interval))
    if n_bars > MAX_BARS:
        raise _bad("invalid_session", f"the session would take {n_bars} bars; at most {MAX_BARS}", "duration_minutes")
    tf = timeframe_seconds(bot_config.timeframe)
    plan = {
        "symbol": symbol,
        "data_source": request.data_source,
        "bar_interval_seconds": interval,
        "poll_seconds": settings.PAPER_POLL_SECONDS,
        "pace": float(request.pace),
        "n_bars": n_bars,
        "warmup_bars": warmup,
        "duration_minutes": float(request.duration_minutes),
    }
    if request.data_source == "synthetic":
        plan["start_ts"] = int(now.timestamp()) // tf * tf
    else:
        from paper.selectors import NoBarsError, bars_load

        try:
            stored = bars_load(symbol=symbol, timeframe=bot_config.timeframe)
        except NoBarsError as exc:
            raise _bad("no_bars", str(exc), "data_source") from None
        if request.start is not None:
            start_ts = int(datetime(request.start.year, request.start.month, request.start.day, tzinfo=UTC).timestamp())
            i0 = int(np.searchsorted(stored.ts, start_ts))
        else:
            i0 = max(0, len(stored) - n_bars)  # the most recent bars
        if len(stored) - i0 < n_bars:
            have = len(stored) - i0
            raise _bad("not_enough_bars",
                       f"{symbol} {bot_config.timeframe} has {have} stored bars from the chosen start; the session needs {n_bars}",
                       "start")
        plan["start_ts"] = int(stored.ts[i0])
    return plan


def session_bars(run: PaperTradingRun) -> tuple[Bars, Bars]:
    """(warm-up bars, session bars) for a run, the same every time it is asked (resume)."""
    plan = run.config_snapshot["session"]
    n, w = plan["n_bars"], plan["warmup_bars"]
    tf = timeframe_seconds(run.timeframe)
    if run.data_source == "synthetic":
        bars = synthetic_bars(run.symbol, run.timeframe, w + n, seed=run.seed, start_ts=plan["start_ts"] - w * tf)
        return bars.slice(0, w), bars.slice(w)
    from paper.selectors import bars_load

    stored = bars_load(symbol=run.symbol, timeframe=run.timeframe)
    i0 = int(np.searchsorted(stored.ts, plan["start_ts"]))
    return stored.slice(max(0, i0 - w), i0), stored.slice(i0, i0 + n)


def session_start(*, bot: Bot, request: SessionRequest, user=None, request_id: str = "") -> PaperTradingRun:
    """Start a live paper session: 423 while the kill switch is latched, 409 if the gate refuses."""
    kill_switch_assert_armed()
    config = bot.trading_config()
    plan = _plan(bot_config=config, request=request, now=timezone.now())
    decision = paper_gate_check(bot=bot)
    if not decision.ok:
        raise Conflict("gate_refused", f"paper metadata gate: {decision.message}",
                       details={"condition": decision.condition, "backtest_id": decision.backtest_id})
    seed = request.seed if request.seed is not None else random.SystemRandom().randrange(2**31)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise _bad("invalid_session", "seed must be a non-negative integer", "seed")
    with transaction.atomic():
        run = ledger.run_create(
            bot=bot,
            starting_cash=float(request.starting_cash),
            symbol=plan["symbol"],
            timeframe=config.timeframe,
            data_source=plan["data_source"],
            seed=seed,
            config_snapshot={**config.canonical(), "session": plan},
            config_hash=config.config_hash,
            duration_minutes=plan["duration_minutes"],
            pace=plan["pace"],
            mode="live",
            request_id=request_id,
            owner=user if getattr(user, "is_authenticated", False) else None,
        )
        run_id = run.id
    if connection.in_atomic_block:  # the caller's transaction: enqueue once it commits
        transaction.on_commit(lambda: session_enqueue(run_id))
        return run
    try:
        session_enqueue(run_id)
    except Exception as exc:  # the broker (Redis) is down: say so, and leave no run waiting forever
        log.warning("could not enqueue paper session %s: %s", run_id, exc)
        reason = f"{REASON_BROKER_UNAVAILABLE}: the session could not be queued ({type(exc).__name__})"
        PaperTradingRun.objects.filter(pk=run_id, status=RunStatus.QUEUED).update(
            status=RunStatus.ABORTED, status_reason=reason[:200], ended_at=timezone.now())
        raise AppError(REASON_BROKER_UNAVAILABLE,
                       f"the task broker is unavailable, so the session was not started; retry shortly ({exc})",
                       status=503, details={"run_id": run_id}) from None
    return run


# A session handed over at shutdown waits this long in the broker's delay queue, so workers
# that are not shutting down are the likely ones to take it.
HANDOFF_DELAY_MS = 500


def session_enqueue(run_id: str, *, delay_ms: int = 0) -> None:
    from paper.actors import run_paper_session

    if delay_ms:
        run_paper_session.send_with_options(args=(run_id,), delay=delay_ms)
    else:
        run_paper_session.send(run_id)


# --- the loop -----------------------------------------------------------------------------------

def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def _claim(run_id: str, worker_id: str) -> PaperTradingRun | None:
    """Take the run's lease, or None if it is terminal or another live worker holds it."""
    with transaction.atomic():
        run = PaperTradingRun.objects.select_for_update().filter(pk=run_id).first()
        if run is None or run.is_terminal:
            return None
        now = timezone.now()
        if run.status == RunStatus.QUEUED and run.stop_requested:
            run.status, run.status_reason, run.ended_at = RunStatus.ABORTED, run.stop_requested, now
            run.save(update_fields=["status", "status_reason", "ended_at", "updated_at"])
            return None
        if run.status == RunStatus.RUNNING and run.worker_id and run.worker_id != worker_id:
            fresh = max(3 * settings.PAPER_POLL_SECONDS, 10.0)
            if (now - run.updated_at).total_seconds() < fresh:
                return None  # a live worker has it (a duplicate delivery)
        run.worker_id = worker_id
        run.status = RunStatus.RUNNING
        run.started_at = run.started_at or now
        run.save(update_fields=["worker_id", "status", "started_at", "updated_at"])
        return run


def session_execute(run_id: str, *, worker_id: str | None = None) -> str:
    """Run (or resume) a session to its end.

    Returns the final status; 'skipped' (terminal, or another worker has it), 'handed_off'
    (this worker is shutting down and enqueued it again), 'lease_lost' (it was resumed
    elsewhere) or 'orphaned' (the database stayed down; the reconciler resumes it later).
    """
    worker_id = worker_id or _worker_id()
    if halts.draining():
        # This worker is shutting down but its consumer still fetches: pass the session on.
        session_enqueue(run_id, delay_ms=HANDOFF_DELAY_MS)
        return "handed_off"
    try:
        try:
            run = _claim(run_id, worker_id)
        except (OperationalError, InterfaceError):
            log.warning("session %s: database unavailable at claim; the reconciler will retry", run_id)
            return "orphaned"
        if run is None:
            return "skipped"
        return _SessionLoop(run, worker_id).run()
    finally:
        _close_connection()


def _close_connection() -> None:
    try:
        connection.close()
    except Exception:  # a connection broken by a database restart may fail to close cleanly
        log.debug("closing a broken connection failed", exc_info=True)


class DatabaseOutage(Exception):
    """The database stayed unavailable longer than PAPER_DB_OUTAGE_SECONDS."""


class _Handoff(Exception):
    """This process's worker is shutting down: hand the session to another worker."""


class _SessionLoop:
    def __init__(self, run: PaperTradingRun, worker_id: str):
        self.row = run
        self.run_id = run.id
        self.worker_id = worker_id
        self.plan = run.config_snapshot["session"]
        self.pending: list[dict] = []
        self.seq = PaperFrame.objects.filter(paper_run_id=run.id).aggregate(m=Max("seq"))["m"] or 0
        self.persisted_fills = 0
        self.order_state: dict[str, tuple] = {}
        self.engine: Engine | None = None
        self.artifacts = RunArtifacts(settings.OUTPUTS_DIR / "paper_sessions", run.id)
        self.live_bars: Bars | None = None
        self.config: BotConfig | None = None
        self.warm: Bars | None = None
        # Set when the ledger refused a bar the engine has run (a stop closed the run meanwhile).
        self.ahead_of_ledger = False

    # frames ---------------------------------------------------------------------------------
    def emit(self, stage: str, message: str, extras: dict) -> None:
        self.seq += 1
        self.pending.append({
            "task_id": self.run_id,
            "stage": stage,
            "message": message,
            "timestamp": timezone.now().isoformat(),
            "seq": self.seq,
            **extras,
        })

    def session_frame(self, stage: str, message: str, **extras) -> None:
        snap = self.engine.snapshot() if self.engine is not None else {
            "equity": self.row.starting_cash, "cash": self.row.starting_cash, "positions": {}}
        self.emit(stage, message, {**snap, **extras})

    def take_frames(self) -> list[dict]:
        """The frames to store with this write; frames emitted meanwhile go with the next one."""
        frames, self.pending = self.pending, []
        return frames

    def publish(self, frames: list[dict]) -> None:
        """Send what the ledger stored (ledger.services.frames_record left just that in `frames`,
        with the seqs it stored), and count on from its last seq."""
        if frames:
            self.seq = max(self.seq, frames[-1]["seq"])
        frames_publish(self.run_id, frames)

    # the loop -----------------------------------------------------------------------------------
    def run(self) -> str:
        run = self.row
        try:
            snapshot = {k: run.config_snapshot[k] for k in ("strategy", "params", "symbols", "timeframe", "risk", "execution")}
            config = BotConfig.validate(**snapshot)
            warm, live = session_bars(run)
            self.config, self.warm, self.live_bars = config, warm, live
            done = run.bars_processed
            # A resumed session replays silently up to the ledger's checkpoint.
            engine = self.engine = self._engine_at(done)
            self._artifacts_start(config, live)
            if done:
                if not self._ledger_matches(engine):
                    return self.finish(RunStatus.ABORTED, f"{REASON_RESUME_MISMATCH}: replayed fills differ from the ledger")
                self.session_frame("session.resumed", f"resumed at bar {done} of {len(live)}", bars_done=done)
            else:
                self.session_frame("session.started",
                                   f"{live.label}, {len(live)} bars, pace {self.plan['pace']:g}",
                                   data_label=live.label, bars_total=len(live))
            try:
                self.persist(bars_processed=done)
            except ledger.LeaseLost:
                raise
            except ledger.RunClosed:  # a stop closed it between the claim and this first write
                return self.finish(RunStatus.ABORTED, ledger.run_heartbeat(run_id=self.run_id) or "run closed",
                                   stopped=True)
            engine.on_event = self.emit
            return self.loop(engine, live, done)
        except _Handoff:
            return self.handoff()
        except ledger.LeaseLost as exc:
            log.warning("session %s: %s; this worker stops writing", self.run_id, exc)
            return "lease_lost"
        except (DatabaseOutage, OperationalError, InterfaceError) as exc:
            # Nothing can be recorded now; the run stays running in the ledger, its heartbeat
            # goes stale and the reconciler resumes it from the ledger once the database is back.
            log.error("session %s: database unavailable (%s); leaving it to the reconciler", self.run_id, exc)
            return "orphaned"
        except Exception as exc:
            log.exception("paper session %s failed", self.run_id)
            try:
                return self.finish(RunStatus.FAILED, f"{REASON_EXCEPTION}: {type(exc).__name__}",
                                   error_type=type(exc).__name__, error_message=str(exc)[:2000])
            except (ledger.RunClosed, DatabaseOutage):
                return "orphaned"
        finally:
            halts.session_event_drop(self.run_id)

    # database outages ---------------------------------------------------------------------------
    def db_retry(self, fn, *, note: bool = True):
        """Call `fn` (one ledger transaction) until it succeeds, for up to PAPER_DB_OUTAGE_SECONDS.

        A PostgreSQL restart or failover takes seconds; the session waits it out and catches
        up rather than failing. Each write is idempotent, so retrying one is safe.
        """
        started = None
        delay = 0.1
        while True:
            try:
                result = fn()
            except (OperationalError, InterfaceError) as exc:
                _close_connection()
                now = time.monotonic()
                if started is None:
                    started = now
                    log.warning("session %s: database unavailable (%s); retrying", self.run_id, exc)
                if now - started > settings.PAPER_DB_OUTAGE_SECONDS:
                    raise DatabaseOutage(f"database unavailable for {now - started:.1f} s: {exc}") from exc
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            if started is not None:
                outage = time.monotonic() - started
                log.warning("session %s: database back after %.1f s", self.run_id, outage)
                if note:  # stored with the next bar's write
                    self.session_frame("session.recovered", f"database unavailable for {outage:.1f} s; the session caught up",
                                   incident="database_unavailable", outage_seconds=round(outage, 3))
            return result

    def handoff(self) -> str:
        """Release the lease and enqueue the session again: another worker resumes it from the ledger."""
        done = self.engine.bars_processed if self.engine is not None else self.row.bars_processed
        self.session_frame("session.handoff", f"worker shutting down at bar {done}; the session moves to another worker")
        frames = self.take_frames()
        if not self.db_retry(lambda: ledger.run_release(run_id=self.run_id, worker_id=self.worker_id, frames=frames),
                             note=False):
            return "lease_lost"
        self.publish(frames)
        session_enqueue(self.run_id, delay_ms=HANDOFF_DELAY_MS)
        log.info("session %s handed off at bar %d", self.run_id, done)
        return "handed_off"

    def loop(self, engine: Engine, live: Bars, done: int) -> str:
        event = halts.session_event(self.run_id)
        interval = self.plan["bar_interval_seconds"] / self.plan["pace"]
        poll = self.plan["poll_seconds"]
        start = time.monotonic()
        next_poll = start + poll
        stop_reason = ""
        for k in range(done, len(live)):
            due = start + (k - done) * interval
            while True:
                now = time.monotonic()
                if event.is_set():
                    if event.handoff:
                        raise _Handoff
                    stop_reason = event.reason or ledger.run_heartbeat(run_id=self.run_id) or f"{REASON_OPERATOR_STOP}: stop requested"
                    break
                if now >= next_poll:
                    stop_reason = ledger.run_heartbeat(run_id=self.run_id, worker_id=self.worker_id)
                    _close_connection()
                    if stop_reason == ledger.LEASE_LOST:
                        raise ledger.LeaseLost(f"run {self.run_id} was resumed by another worker")
                    self._artifacts_call(self.artifacts.heartbeat, bars_processed=engine.bars_processed)
                    next_poll = now + poll
                    if stop_reason:
                        break
                if now >= due:
                    break
                event.wait(min(due, next_poll) - now)
            if stop_reason:
                break
            lag_ms = (time.monotonic() - due) * 1000
            first_frame = len(self.pending)
            engine.extend(live.slice(k, k + 1))
            for frame in self.pending[first_frame:]:
                if frame["stage"] == "bar.received":
                    frame["lag_ms"] = round(lag_ms, 3)
            try:
                self.persist(bars_processed=k + 1)
            except ledger.LeaseLost:
                raise
            except ledger.RunClosed:
                self.ahead_of_ledger = True
                stop_reason = ledger.run_heartbeat(run_id=self.run_id) or "run closed"
                break
            if engine.status != "running":
                break
        if stop_reason:
            engine.stop(stop_reason)
            return self.finish(RunStatus.ABORTED, stop_reason, stopped=True)
        if engine.status == HALTED:
            return self.finish(RunStatus.ABORTED, f"{REASON_RISK_HALT}: {engine.halt.message}")
        return self.finish(RunStatus.SUCCESS, REASON_COMPLETED)

    def persist(self, *, bars_processed: int) -> None:
        engine = self.engine
        broker = engine.broker
        fills = broker.fills[self.persisted_fills:]
        changed = [o for o in broker.orders if self.order_state.get(o.client_order_id) != (o.status, o.filled_qty)]
        point = engine.last_point() if engine.bars_processed else None
        equity = point[2] if point else self.row.starting_cash
        frames = self.take_frames()
        self.db_retry(lambda: ledger.session_bar_persist(
            run_id=self.run_id, fills=fills, orders=changed, equity_point=point, frames=frames,
            bars_processed=bars_processed, ending_equity=equity, starting_cash=self.row.starting_cash,
            worker_id=self.worker_id,
        ))
        _close_connection()  # back to the pool between bars
        self.persisted_fills = len(broker.fills)
        for o in changed:
            self.order_state[o.client_order_id] = (o.status, o.filled_qty)
        self.publish(frames)

    def _ledger_matches(self, engine: Engine) -> bool:
        recorded = list(PaperFill.objects.filter(paper_run_id=self.run_id).order_by("fill_id")
                        .values_list("fill_id", "qty", "price"))
        replayed = sorted((f.fill_id, f.qty, f.price) for f in engine.broker.fills)
        if recorded != replayed:
            log.error("session %s: ledger has %d fills, replay made %d", self.run_id, len(recorded), len(replayed))
            return False
        self.persisted_fills = len(engine.broker.fills)
        self.order_state = {o.client_order_id: (o.status, o.filled_qty) for o in engine.broker.orders}
        return True

    def _engine_at(self, bars: int) -> Engine:
        """A fresh engine warmed up and run silently through the first `bars` live bars."""
        run = self.row
        engine = self.config.build_engine(starting_cash=run.starting_cash, seed=run.seed, symbol=run.symbol)
        engine.warmup(self.warm)
        if bars:
            engine.extend(self.live_bars.slice(0, bars))
        return engine

    def finish(self, status: str, reason: str, *, error_type: str = "", error_message: str = "",
               stopped: bool = False) -> str:
        """End the run as `status`, or, if a stop closed it already, write the session's epilogue."""
        if not stopped:
            # Ended by itself (completed, halted by its risk limits, failed) just as a stop closed
            # the run: the stop's word stands, and the goodbye frame says what the ledger says.
            closed = self.db_retry(lambda: PaperTradingRun.objects.filter(
                pk=self.run_id, status=RunStatus.ABORTED, stop_requested__gt="").values_list(
                "status", "status_reason").first(), note=False)
            _close_connection()
            if closed:
                status, reason = closed
                error_type = error_message = ""
        engine = self.engine
        if engine is not None and self.ahead_of_ledger:
            # The engine ran a bar the ledger refused: rebuild it at the ledger's last bar, so the
            # epilogue (cancelled orders, metrics) describes what the ledger holds.
            engine = self.engine = self._engine_at(engine.bars_processed - 1)
            engine.on_event = self.emit
            self.persisted_fills = len(engine.broker.fills)
            self.order_state = {o.client_order_id: (o.status, o.filled_qty) for o in engine.broker.orders}
        if engine is not None and engine.status == "running" and status != RunStatus.SUCCESS:
            engine.stop(reason)
        stage = TERMINAL_STAGES[status]
        self.session_frame(stage, f"session {status}: {reason}", status=status, status_reason=reason,
                           **({"error_type": error_type, "error_message": error_message} if error_type else {}))
        frames = self.take_frames()
        if engine is not None:
            broker = engine.broker
            result = engine.result()
            new_fills = broker.fills[self.persisted_fills:]
            changed = [o for o in broker.orders if self.order_state.get(o.client_order_id) != (o.status, o.filled_qty)]
            final = self.db_retry(lambda: ledger.run_finish(
                run_id=self.run_id, result=result, status=status, status_reason=reason, frames=frames,
                error_type=error_type, error_message=error_message, new_fills=new_fills, changed_orders=changed,
                worker_id=self.worker_id,
            ), note=False)
        else:
            final = self.db_retry(lambda: _fail_without_engine(self.run_id, status, reason, frames, error_type,
                                                               error_message), note=False)
        _close_connection()
        self.publish(frames)
        # Artifacts last: the ledger and the frames come first.
        self._artifacts_finish(final, error_type, error_message)
        return final.status

    # artifacts (the runbook's view of live sessions) -------------------------------------------
    def _artifacts_call(self, fn, **kwargs) -> None:
        try:
            fn(**kwargs)
        except Exception:  # artifacts never stop a session
            log.exception("session %s: could not write artifacts", self.run_id)

    def _artifacts_start(self, config: BotConfig, live: Bars) -> None:
        run = self.row
        if self.artifacts.path(artifact_contract.STATUS).exists():
            # A resumed session keeps its folder, goes on heartbeating it, and says why it resumed.
            self.artifacts.load_status()
            self._artifacts_call(self.artifacts.incidents_set, incidents=session_incidents(self.run_id))
            return
        metadata = {
            "mode": "live", "request_id": run.request_id, "bot_id": run.bot_id,
            "bot_name": run.bot.name, "strategy": config.strategy, "ticker": run.symbol, "timeframe": run.timeframe,
            "data_source": run.data_source, "data_label": live.label,
            "start": ts_iso(live.ts[0])[:10] if len(live) else None,
            "end": ts_iso(live.ts[-1])[:10] if len(live) else None,
            "starting_cash": run.starting_cash, "seed": run.seed, "config_hash": run.config_hash,
        }
        self._artifacts_call(self.artifacts.start, metadata=metadata, config=run.config_snapshot,
                             bars_total=len(live), started_at=run.started_at.isoformat())

    def _artifacts_finish(self, final: PaperTradingRun, error_type: str, error_message: str) -> None:
        if not self.artifacts._status:
            self._artifacts_call(self.artifacts.start, metadata={"mode": "live", "request_id": final.request_id},
                                 config=final.config_snapshot, bars_total=0,
                                 started_at=final.started_at.isoformat() if final.started_at else None)
        self._artifacts_call(self.artifacts.mark_terminal, status=final.status, status_reason=final.status_reason,
                             bars_processed=final.bars_processed, error_type=final.error_type,
                             error_message=final.error_message)
        delay_ms = settings.PAPER_ARTIFACTS_DELAY_MS
        if delay_ms > 0:
            # Reports and charts later, off the stop path: when the kill switch ends 50 sessions
            # at once, 50 chart renders would otherwise slow the sessions still ending.
            from paper.actors import write_session_artifacts

            try:
                write_session_artifacts.send_with_options(args=(self.run_id,), delay=delay_ms)
                return
            except Exception as exc:  # the broker is down: the session's ending stands; write them here
                log.warning("session %s: could not queue its artifacts (%s: %s); writing them in-process",
                            self.run_id, type(exc).__name__, exc)
        self._artifacts_call(session_artifacts_write, run_id=self.run_id)


INCIDENT_STAGES = ("session.worker_lost", "session.recovered")


def session_incidents(run_id: str) -> list[dict]:
    """The faults a session recovered from, from its stored frames (for status.json and alerts)."""
    frames = PaperFrame.objects.filter(paper_run_id=run_id, stage__in=INCIDENT_STAGES).order_by("seq")
    return [{"at": p.get("timestamp"), "kind": p.get("incident", stage), "message": message}
            for stage, message, p in frames.values_list("stage", "message", "payload")]


def session_artifacts_write(*, run_id: str) -> None:
    """Write a live session's reports, trades and charts from the ledger (idempotent)."""
    from paper.replay import paper_index_refresh

    run = PaperTradingRun.objects.select_related("bot").get(pk=run_id)
    artifacts = RunArtifacts(settings.OUTPUTS_DIR / "paper_sessions", run.id)
    artifacts.load_status()
    artifacts.incidents_set(session_incidents(run.id))
    result = _LedgerResult.load(run)
    n = len(result.equity)
    label = f"{run.symbol} {run.timeframe}" + (" (synthetic)" if run.data_source == "synthetic" else "")
    data = {"ticker": run.symbol, "timeframe": run.timeframe, "source": run.data_source, "label": label, "bars": n,
            "start": ts_iso(result.ts[0])[:10] if n else None, "end": ts_iso(result.ts[-1])[:10] if n else None}
    extra = {"total_pnl": run.total_pnl, "ending_equity": run.ending_equity, "starting_cash": run.starting_cash,
             "halt": run.halt, "num_fills": run.num_fills}
    # Everything below is files and charts: give the database connection back to the pool first.
    # Held while charts waited their turn (one at a time per process), 50 sessions ending at
    # once emptied the pool, and live sessions waited seconds for a connection. (Not inside a
    # caller's transaction: closing there would silently doom it.)
    if not connection.in_atomic_block:
        _close_connection()
    artifacts.finish(status=run.status, status_reason=run.status_reason, result=result, request_id=run.request_id,
                     contract_type=artifact_contract.PAPER_CONTRACT_TYPE, data=data, extra_metrics=extra,
                     error_type=run.error_type, error_message=run.error_message, title=f"{run.bot.name} {label}")
    paper_index_refresh(artifacts.root)


@dataclass
class _LedgerResult:
    """What the artifact writer needs of a result, read back from the ledger."""

    metrics: dict
    fills: list
    ts: np.ndarray
    equity: np.ndarray
    starting_cash: float

    @classmethod
    def load(cls, run: PaperTradingRun) -> _LedgerResult:
        fills = ledger_selectors.run_engine_fills(run=run)
        points = list(run.equity_points.order_by("bar_index").values_list("ts", "equity"))
        ts = np.array([int(t.timestamp()) for t, _ in points], dtype=np.int64)
        equity = np.array([e for _, e in points], dtype=np.float64)
        return cls(metrics=dict(run.metrics or {}), fills=fills, ts=ts, equity=equity,
                   starting_cash=run.starting_cash)


def _fail_without_engine(run_id, status, reason, frames, error_type, error_message) -> PaperTradingRun:
    with transaction.atomic():
        run = PaperTradingRun.objects.select_for_update().get(pk=run_id)
        ledger.frames_record(run=run, frames=frames)
        if not run.is_terminal:
            run.status, run.status_reason, run.ended_at = status, reason[:200], timezone.now()
            run.error_type, run.error_message = error_type[:100], error_message
            run.save()
    return run


# --- stopping -------------------------------------------------------------------------------------

def sessions_stop(*, run_ids: list[str] | None, reason: str) -> dict:
    """Stop these sessions (all active ones when None): closed in the ledger at once, then woken.

    One transaction ends every one of them as aborted with `reason` (P&L as of its last
    recorded bar). From its commit the ledger takes no further bar, order or fill from them:
    that is the stop, and the time reported. Then the push wakes each session wherever it
    runs, and it writes its epilogue into its closed row: its orders cancelled, its final
    metrics and its goodbye frame (ledger.services.run_finish). A session whose worker is gone
    is stopped all the same; it writes no epilogue.
    """
    started = time.perf_counter()
    reason = reason[:200]
    try:
        with transaction.atomic():
            qs = PaperTradingRun.objects.select_for_update().filter(status__in=ACTIVE)
            if run_ids is not None:
                qs = qs.filter(pk__in=run_ids)
            ids = sorted(qs.values_list("pk", flat=True))
            PaperTradingRun.objects.filter(pk__in=ids).update(
                stop_requested=reason, status=RunStatus.ABORTED, status_reason=reason,
                ended_at=timezone.now(), total_pnl=F("ending_equity") - F("starting_cash"), updated_at=timezone.now(),
            )
    except Exception:
        # The ledger could not close them: the push still goes out, and each session woken by
        # it ends itself as stopped (run_finish closes a run the stop did not). Then the caller
        # hears the failure.
        halts.stop_push([halts.ALL] if run_ids is None else list(run_ids), reason)
        raise
    halts.stop_push(ids, reason)
    return {"stopped": ids, "count": len(ids), "elapsed_ms": round((time.perf_counter() - started) * 1000, 2)}


def sessions_halt(reason: str):
    """The paper subsystem's halt handler (settings.RISK_HALT_HANDLERS): every active session
    stopped, once, whichever door fired (the kill switch, /bots/halt-all, /paper/stop-all)."""
    from risk.registry import HaltReport

    report = sessions_stop(run_ids=None, reason=reason)
    bots = sorted(set(PaperTradingRun.objects.filter(pk__in=report["stopped"]).values_list("bot_id", flat=True)))
    return HaltReport(subsystem="paper", stopped=report["stopped"],
                      detail=f"{report['count']} sessions of {len(bots)} bots stopped"
                             + (f" (bots {', '.join(map(str, bots))})" if bots else ""))


def session_stop(*, run_id: str, user=None) -> dict:
    """Stop one session for `user`: its starter, its bot's owner or staff (403 otherwise, whatever
    its state; bots/permissions.py). No user: the system (a command), which may stop any."""
    run = PaperTradingRun.objects.select_related("owner", "bot__owner").filter(pk=run_id).first()
    if run is None:
        raise NotFound("run_not_found", f"no paper run {run_id!r}")
    if user is not None:
        from bots.permissions import run_change_assert

        run_change_assert(user=user, run=run, action="stop")
    if run.is_terminal:
        return {"stopped": [], "count": 0, "elapsed_ms": 0.0,
                "detail": f"run {run_id} already {run.status}"}
    who = getattr(user, "username", "") or "api"
    return sessions_stop(run_ids=[run_id], reason=f"{REASON_OPERATOR_STOP}: stopped by {who}")


def sessions_sweep_stale(*, stale_seconds: float | None = None) -> list[str]:
    """Running sessions whose heartbeat is too old end as aborted (their worker is gone)."""
    stale_seconds = settings.PAPER_STALE_SECONDS if stale_seconds is None else stale_seconds
    cutoff = timezone.now() - timedelta(seconds=stale_seconds)
    stale = list(PaperTradingRun.objects.filter(status=RunStatus.RUNNING, updated_at__lt=cutoff).values_list("pk", "updated_at"))
    swept = []
    for pk, seen in stale:
        with transaction.atomic():
            run = PaperTradingRun.objects.select_for_update().filter(
                pk=pk, status=RunStatus.RUNNING, updated_at=seen).first()
            if run is None:
                continue  # it moved on
            run.status = RunStatus.ABORTED
            run.status_reason = f"{REASON_WORKER_LOST}: no heartbeat since {seen:%Y-%m-%d %H:%M:%S} UTC"
            run.ended_at = timezone.now()
            run.save(update_fields=["status", "status_reason", "ended_at", "updated_at"])
            ledger.run_close_from_ledger(run=run)
            swept.append(pk)
    return swept


WORKER_LOST_STAGE = "session.worker_lost"


def _enqueue_quietly(run_id: str) -> None:
    try:
        session_enqueue(run_id)
    except Exception:  # the broker is down too: the next reconcile tries again
        log.warning("reconcile: could not enqueue session %s", run_id, exc_info=True)


def _artifacts_later(run_id: str) -> None:
    from paper.actors import write_session_artifacts

    try:
        write_session_artifacts.send(run_id)
    except Exception as exc:  # the broker is down: write them here, so the runbook does not wait for it
        log.warning("reconcile: could not queue the artifacts of %s (%s); writing them in-process", run_id, exc)
        try:
            session_artifacts_write(run_id=run_id)
        except Exception:
            log.exception("reconcile: could not write the artifacts of %s", run_id)


def sessions_reconcile(*, now: datetime | None = None) -> dict:
    """Get sessions that no worker is running going again, or end them with a reason.

    - running, heartbeat older than PAPER_RESUME_AFTER_SECONDS: its worker died (SIGKILL,
      OOM, a lost host) or could not reach the database. Release the lease and enqueue it:
      it resumes from the ledger (`session.worker_lost`, then `session.resumed`). After
      PAPER_MAX_RESUMES such resumes, or no heartbeat for PAPER_STALE_SECONDS, it ends
      aborted with reason `worker_lost`.
    - queued longer than PAPER_REQUEUE_AFTER_SECONDS: its message may be gone (Redis
      restarted without persistence). Enqueue it again; a duplicate is skipped at claim.
    - closed by a stop more than PAPER_RESUME_AFTER_SECONDS ago (within the last day) and still
      without its epilogue: no worker ran it when the stop came. Its goodbye frame says so
      (incident `no_epilogue`: the ledger as of its last bar stands), its open orders are
      canceled and its metrics measured from the ledger (ledger.services.run_close_from_ledger),
      and its folder is written from the ledger, so the runbook shows it aborted rather than
      running. A session aborted as `worker_lost` gets the same epilogue.

    Every worker process runs this every PAPER_RECONCILE_SECONDS (paper.worker); each change
    is a conditional update under the row lock, so concurrent reconcilers do each thing once.
    """
    from ledger.models import PaperFrame

    now = now or timezone.now()
    resume_after = timedelta(seconds=settings.PAPER_RESUME_AFTER_SECONDS)
    stale_after = settings.PAPER_STALE_SECONDS
    report: dict[str, list[str]] = {"resumed": [], "aborted": [], "requeued": [], "closed": []}
    stale = PaperTradingRun.objects.filter(mode="live", status=RunStatus.RUNNING, updated_at__lt=now - resume_after)
    for pk, seen in stale.values_list("pk", "updated_at"):
        with transaction.atomic():
            run = PaperTradingRun.objects.select_for_update().filter(
                pk=pk, status=RunStatus.RUNNING, updated_at=seen).first()
            if run is None:
                continue  # it moved on, or another reconciler got there first
            age = (now - seen).total_seconds()
            lost = PaperFrame.objects.filter(paper_run_id=pk, stage=WORKER_LOST_STAGE).count()
            holder = run.worker_id or "no worker"
            frame = _reconciler_frame(run, now=now, incident=REASON_WORKER_LOST)
            if age > stale_after or lost >= settings.PAPER_MAX_RESUMES:
                why = (f"no heartbeat since {seen:%Y-%m-%d %H:%M:%S} UTC" if age > stale_after
                       else f"worker lost again after {lost} resumes")
                reason = f"{REASON_WORKER_LOST}: {why}"
                _record_and_publish(run, [{**frame, "stage": TERMINAL_STAGES[RunStatus.ABORTED],
                                           "message": f"session aborted: {reason}",
                                           "status": RunStatus.ABORTED, "status_reason": reason}])
                PaperTradingRun.objects.filter(pk=pk).update(status=RunStatus.ABORTED, status_reason=reason[:200],
                                                             ended_at=now, worker_id="")
                run.refresh_from_db()
                ledger.run_close_from_ledger(run=run)
                report["aborted"].append(pk)
                transaction.on_commit(lambda pk=pk: _artifacts_later(pk))
            else:
                message = (f"no heartbeat for {age:.0f} s from {holder} at bar {run.bars_processed}; resuming on "
                           f"another worker (resume {lost + 1} of at most {settings.PAPER_MAX_RESUMES})")
                _record_and_publish(run, [{**frame, "stage": WORKER_LOST_STAGE, "message": message}])
                PaperTradingRun.objects.filter(pk=pk).update(worker_id="", updated_at=now)
                report["resumed"].append(pk)
                transaction.on_commit(lambda pk=pk: _enqueue_quietly(pk))
    requeue_after = timedelta(seconds=settings.PAPER_REQUEUE_AFTER_SECONDS)
    waiting = PaperTradingRun.objects.filter(mode="live", status=RunStatus.QUEUED, updated_at__lt=now - requeue_after)
    for pk, seen in waiting.values_list("pk", "updated_at"):
        if PaperTradingRun.objects.filter(pk=pk, status=RunStatus.QUEUED, updated_at=seen).update(updated_at=now):
            report["requeued"].append(pk)
            _enqueue_quietly(pk)
    report["closed"] = _goodbye_for_unanswered_stops(now=now, after=resume_after)
    if any(report.values()):
        log.warning("reconcile: %s", {k: v for k, v in report.items() if v})
    return report


NO_EPILOGUE = "no_epilogue"


def _reconciler_frame(run: PaperTradingRun, *, now: datetime, incident: str) -> dict:
    """The envelope of a frame the reconciler writes for a run (call with the run row locked)."""
    return {"task_id": run.pk, "timestamp": now.isoformat(), "seq": 0,  # numbered as stored
            "equity": run.equity, "bars_done": run.bars_processed, "incident": incident}


def _record_and_publish(run: PaperTradingRun, frames: list[dict]) -> None:
    """Store the reconciler's frames for a locked run, and publish them once the write commits:
    an open socket hears a goodbye that no session is left to send."""
    ledger.frames_record(run=run, frames=frames)
    if frames:
        transaction.on_commit(lambda run_id=run.pk, frames=frames: frames_publish(run_id, frames))


def _goodbye_for_unanswered_stops(*, now: datetime, after: timedelta) -> list[str]:
    from django.db.models import Exists, OuterRef

    from ledger.models import PaperFrame

    goodbye = TERMINAL_STAGES[RunStatus.ABORTED]
    said = PaperFrame.objects.filter(paper_run_id=OuterRef("pk"), stage=goodbye)
    unanswered = (PaperTradingRun.objects
                  .filter(mode="live", status=RunStatus.ABORTED, started_at__isnull=False, metrics={},
                          ended_at__lt=now - after, ended_at__gte=now - timedelta(days=1))
                  .exclude(stop_requested="").exclude(Exists(said)))
    closed = []
    for pk in unanswered.values_list("pk", flat=True):
        with transaction.atomic():
            run = PaperTradingRun.objects.select_for_update().filter(pk=pk, metrics={}).first()
            if run is None or PaperFrame.objects.filter(paper_run_id=pk, stage=goodbye).exists():
                continue  # its epilogue came meanwhile, or another reconciler got there first
            reason = run.status_reason
            canceled = ledger.run_close_from_ledger(run=run)
            _record_and_publish(run, [{
                **_reconciler_frame(run, now=now, incident=NO_EPILOGUE), "stage": goodbye,
                "message": (f"session aborted: {reason}; no worker was running it, so the ledger as of bar "
                            f"{run.bars_processed} stands: {canceled} open order(s) canceled and its metrics "
                            "measured from the ledger"),
                "status": RunStatus.ABORTED, "status_reason": reason,
            }])
            closed.append(pk)
            transaction.on_commit(lambda pk=pk: _artifacts_later(pk))
    return closed


def sessions_resume_orphans() -> list[str]:
    """Embedded mode at startup: re-enqueue sessions left queued or running by a dead process."""
    ids = list(PaperTradingRun.objects.filter(status__in=ACTIVE, mode="live").values_list("pk", flat=True))
    for run_id in ids:
        session_enqueue(run_id)
    return ids
