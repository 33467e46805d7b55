"""Writes to the paper ledger: create a run, record fills as they happen, persist a result.

Every write is one transaction and idempotent: fills are unique per (run, fill id).
"""
from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
from django.db import connection, transaction
from django.utils import timezone

from ledger.models import PaperEquityPoint, PaperFill, PaperOrder, PaperTradingRun, RunStatus
from paper.engine.engine import RunResult
from paper.engine.orders import Fill, Order

log = logging.getLogger(__name__)


def _dt(ts: int) -> datetime:
    return datetime.fromtimestamp(int(ts), UTC)


def run_create(
    *,
    bot,
    starting_cash: float,
    symbol: str,
    timeframe: str,
    data_source: str,
    seed: int,
    config_snapshot: dict,
    config_hash: str,
    duration_minutes: float | None = None,
    pace: float = 1.0,
    mode: str = "live",
    request_id: str = "",
    run_id: str | None = None,
    owner=None,
) -> PaperTradingRun:
    """A queued run of `bot`; `owner` is the user who started it (None: a replay, or the system)."""
    kwargs = {"id": run_id} if run_id else {}
    # started_at is when the operator started the session, so it is never NULL: the seed's
    # `ORDER BY started_at DESC` would put NULLs first on PostgreSQL (last on SQLite).
    return PaperTradingRun.objects.create(
        bot=bot,
        status=RunStatus.QUEUED,
        started_at=timezone.now(),
        starting_cash=starting_cash,
        symbol=symbol,
        timeframe=timeframe,
        data_source=data_source,
        seed=seed,
        config_snapshot=config_snapshot,
        config_hash=config_hash,
        duration_minutes=duration_minutes,
        pace=pace,
        mode=mode,
        request_id=request_id,
        owner=owner,
        **kwargs,
    )


def run_mark_running(*, run: PaperTradingRun) -> PaperTradingRun:
    run.status = RunStatus.RUNNING
    run.started_at = run.started_at or timezone.now()
    run.save(update_fields=["status", "started_at", "updated_at"])
    return run


FILL_COLUMNS = "paper_run_id, fill_id, order_id, symbol, side, qty, price, fee, liquidity, bar_index, filled_at"
ORDER_COLUMNS = ("paper_run_id, order_id, symbol, side, type, qty, limit_price, stop_price, tif, status, "
                 "filled_qty, avg_fill_price, reason, bar_index, created_at, updated_at")


def _executemany(sql: str, rows: list[tuple]) -> None:
    # Raw SQL: the ORM's per-row model objects cost ~30 us a row, which a long replay's
    # thousands of fills and orders cannot afford. ON CONFLICT works on SQLite and PostgreSQL.
    if not rows:
        return
    with connection.cursor() as cursor:
        for lo in range(0, len(rows), 20_000):
            cursor.executemany(sql, rows[lo : lo + 20_000])


def fills_insert(*, run_id: str, fills: Sequence[Fill]) -> None:
    """Insert fills; a fill already recorded (same run and fill id) is skipped."""
    adapt = connection.ops.adapt_datetimefield_value
    rows = [
        (run_id, f.fill_id, f.client_order_id, f.symbol, str(f.side), f.qty, f.price, f.fee, str(f.liquidity),
         f.bar_index, adapt(_dt(f.ts)))
        for f in fills
    ]
    _executemany(
        f"INSERT INTO {PaperFill._meta.db_table} ({FILL_COLUMNS}) VALUES ({', '.join(['%s'] * 11)}) "
        "ON CONFLICT (paper_run_id, fill_id) DO NOTHING",
        rows,
    )


def orders_upsert(*, run: PaperTradingRun, orders: Sequence[Order]) -> None:
    """Insert new orders and update the state of known ones, keyed on (run, order id)."""
    adapt = connection.ops.adapt_datetimefield_value
    rows = [
        (run.pk, o.client_order_id, o.symbol, str(o.side), str(o.type),
         o.qty if isinstance(o.qty, float) and o.qty == o.qty else 0.0,
         o.limit_price, o.stop_price, str(o.tif), str(o.status), o.filled_qty,
         o.avg_fill_price if o.filled_qty else None, o.reason[:300], o.created_bar,
         adapt(_dt(o.created_ts)), adapt(_dt(o.updated_ts)))
        for o in orders
    ]
    _executemany(
        f"INSERT INTO {PaperOrder._meta.db_table} ({ORDER_COLUMNS}) VALUES ({', '.join(['%s'] * 16)}) "
        "ON CONFLICT (paper_run_id, order_id) DO UPDATE SET status = excluded.status, "
        "filled_qty = excluded.filled_qty, avg_fill_price = excluded.avg_fill_price, reason = excluded.reason, "
        "updated_at = excluded.updated_at, qty = excluded.qty",
        rows,
    )


def equity_points_record(*, run: PaperTradingRun, result: RunResult, start: int = 0,
                         max_points: int | None = None) -> None:
    """Insert equity points from bar `start` on (thinned evenly to `max_points`, keeping the last
    bar); a point already stored is skipped."""
    n = len(result.equity)
    if start >= n:
        return
    indices = range(start, n)
    if max_points and n - start > max_points:
        stride = -(-(n - start) // max_points)
        indices = [*range(start, n, stride)]
        if indices[-1] != n - 1:
            indices.append(n - 1)
    ts = result.ts.tolist()
    off = result.bar_offset  # equity points carry the same absolute bar index as fills
    equity, cash, position = result.equity.tolist(), result.cash.tolist(), result.position.tolist()
    equity_rows_insert(run_id=run.pk, rows=[(off + i, ts[i], equity[i], cash[i], position[i]) for i in indices])


def equity_rows_insert(*, run_id: str, rows: Sequence[tuple[int, int, float, float, float]]) -> None:
    """Insert (bar index, ts, equity, cash, position) rows; a point already stored is skipped.

    Raw SQL with ON CONFLICT DO NOTHING: the ORM's per-row model objects cost ~30 us a row, far
    too slow for million-bar replays. On PostgreSQL, COPY into a staging table and one INSERT:
    executemany through the driver is ~30x slower there.
    """
    if not rows:
        return
    table = PaperEquityPoint._meta.db_table
    columns = "paper_run_id, bar_index, ts, equity, cash, position"
    if connection.vendor == "postgresql":
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "CREATE TEMP TABLE IF NOT EXISTS equity_stage (paper_run_id varchar(40), bar_index integer, "
                "ts bigint, equity double precision, cash double precision, position double precision) "
                "ON COMMIT DELETE ROWS"
            )
            cursor.execute("TRUNCATE equity_stage")
            # repr() of a float round-trips exactly; one text block beats write_row per row.
            block = "".join(f"{run_id}\t{i}\t{t}\t{e!r}\t{c!r}\t{q!r}\n" for i, t, e, c, q in rows)
            with cursor.cursor.copy(f"COPY equity_stage ({columns}) FROM STDIN") as copy:
                copy.write(block)
            cursor.execute(
                f"INSERT INTO {table} ({columns}) SELECT paper_run_id, bar_index, to_timestamp(ts), "
                "equity, cash, position FROM equity_stage ON CONFLICT (paper_run_id, bar_index) DO NOTHING"
            )
        return
    adapt = connection.ops.adapt_datetimefield_value
    sql = f"INSERT INTO {table} ({columns}) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (paper_run_id, bar_index) DO NOTHING"
    _executemany(sql, [(run_id, i, adapt(_dt(t)), e, c, q) for i, t, e, c, q in rows])


def run_persist(
    *,
    run: PaperTradingRun,
    result: RunResult,
    status: str,
    status_reason: str = "",
    error_type: str = "",
    error_message: str = "",
    max_equity_points: int | None = None,
) -> PaperTradingRun:
    """Write a run's orders, fills and equity and close the run row, in one transaction.

    `max_equity_points` thins a long replay's equity curve in the ledger (evenly, keeping the
    last bar); the artifacts keep the full curve.

    Safe to call twice with the same result: nothing is duplicated. A run a stop closed
    (sessions_stop, the kill switch) takes nothing: RunClosed. The start and end times are the
    locked row's, never a stale copy's.
    """
    with transaction.atomic():
        row = PaperTradingRun.objects.select_for_update().get(pk=run.pk)
        if row.is_terminal and row.stop_requested:
            raise RunClosed(row.status)
        run.started_at, run.ended_at = row.started_at, row.ended_at
        orders_upsert(run=run, orders=result.orders)
        fills_insert(run_id=run.pk, fills=result.fills)
        equity_points_record(run=run, result=result, max_points=max_equity_points)
        now = timezone.now()
        run.status = status
        run.status_reason = status_reason
        run.error_type = error_type
        run.error_message = error_message
        run.num_fills = PaperFill.objects.filter(paper_run=run).count()
        run.ending_equity = result.final_equity
        run.total_pnl = result.final_equity - run.starting_cash
        run.bars_processed = len(result.equity)
        run.metrics = result.metrics
        run.halt = result.halt.to_dict() if result.halt else None
        run.started_at = run.started_at or now
        if status in (RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.ABORTED):
            run.ended_at = run.ended_at or now
        # Only the fields a result sets: a concurrent stop request must not be overwritten.
        run.save(update_fields=["status", "status_reason", "error_type", "error_message", "num_fills", "ending_equity",
                                "total_pnl", "bars_processed", "metrics", "halt", "started_at", "ended_at",
                                "updated_at"])
    return run


class RunClosed(Exception):
    """The run row is terminal (stopped or forced aborted): a session must write nothing more."""


class LeaseLost(RunClosed):
    """Another worker holds the run now (it was resumed elsewhere): this one must write nothing more."""


def _check_lease(run: PaperTradingRun, worker_id: str | None) -> None:
    # Fencing: a worker that stalled (a database outage, a long pause) while the run was
    # handed to another worker must not write over the new holder's ledger.
    if worker_id is not None and run.worker_id != worker_id:
        raise LeaseLost(f"run {run.pk} is held by {run.worker_id or 'no worker (released)'}, not {worker_id}")


def _fill_count(run_id: str) -> int:
    # Counted, not incremented: a bar retried after a lost COMMIT acknowledgement inserts
    # no fill twice (ON CONFLICT), and must not count one twice either.
    return PaperFill.objects.filter(paper_run_id=run_id).count()


def session_bar_persist(
    *,
    run_id: str,
    fills: Sequence[Fill],
    orders: Sequence[Order],
    equity_point: tuple[int, int, float, float, float] | None,
    frames: Sequence[dict],
    bars_processed: int,
    ending_equity: float,
    starting_cash: float,
    worker_id: str | None = None,
) -> None:
    """One live bar, in one transaction: new fills, changed orders, the equity point, frames,
    and the run row (counts, P&L, heartbeat). Raises RunClosed if the run is already terminal,
    LeaseLost if `worker_id` no longer holds it.

    The run row is locked first, so a concurrent force-abort and this write never interleave.
    Retrying the same bar is safe: every insert is keyed and the counts are recounted.
    """
    with transaction.atomic():
        run = PaperTradingRun.objects.select_for_update().get(pk=run_id)
        if run.is_terminal:
            raise RunClosed(run.status)
        _check_lease(run, worker_id)
        orders_upsert(run=run, orders=orders)
        fills_insert(run_id=run.pk, fills=fills)
        if equity_point is not None:
            bar_index, ts, equity, cash, position = equity_point
            PaperEquityPoint.objects.bulk_create(
                [PaperEquityPoint(paper_run=run, bar_index=bar_index, ts=_dt(ts), equity=equity, cash=cash, position=position)],
                ignore_conflicts=True,
            )
        frames_record(run=run, frames=frames)
        num_fills = _fill_count(run.pk) if fills else run.num_fills
        PaperTradingRun.objects.filter(pk=run.pk).update(
            num_fills=num_fills,
            total_pnl=ending_equity - starting_cash,
            ending_equity=ending_equity,
            bars_processed=bars_processed,
            updated_at=timezone.now(),
        )


TERMINAL_FRAME_STAGES = ("session.completed", "session.stopped", "session.failed")


def frames_record(*, run: PaperTradingRun, frames: list[dict]) -> list[dict]:
    """Store a run's frames so that its seqs run 1..N without a gap and exactly one is terminal.

    Call with the run row locked (every writer does). A frame whose seq is already stored is a
    retry of a write whose commit went unacknowledged, and is skipped; the others are numbered on
    from the last stored seq, whatever seq they came with (a refused bar's frames used numbers
    that were never stored). Nothing is stored after the run's terminal frame: a second goodbye
    (a late session after the reconciler's, a failure after a completion) is dropped.

    `frames` is changed in place to what was stored, with the seqs stored, so the caller
    publishes exactly that. Returns it.
    """
    from ledger.models import PaperFrame

    if not frames:
        return frames
    last = (PaperFrame.objects.filter(paper_run_id=run.pk).order_by("-seq").values_list("seq", "stage").first())
    last_seq, ended = (last[0], last[1] in TERMINAL_FRAME_STAGES) if last else (0, False)
    stored: list[dict] = []
    for frame in frames:
        if ended:
            break
        if frame.get("seq") and frame["seq"] <= last_seq and not stored:
            continue  # stored by the attempt whose acknowledgement was lost
        last_seq += 1
        frame["seq"] = last_seq
        stored.append(frame)
        ended = frame["stage"] in TERMINAL_FRAME_STAGES
    frames[:] = stored
    if not stored:
        return frames
    adapt = connection.ops.adapt_datetimefield_value
    rows = [(run.pk, f["seq"], f["stage"], str(f["message"])[:300], json.dumps(f, default=str),
             adapt(datetime.fromisoformat(f["timestamp"]))) for f in stored]
    _executemany(
        f"INSERT INTO {PaperFrame._meta.db_table} (paper_run_id, seq, stage, message, payload, created_at) "
        "VALUES (%s, %s, %s, %s, %s, %s)",
        rows,
    )
    return frames


def replay_chunk_persist(
    *,
    run_id: str,
    fills: Sequence[Fill],
    orders: Sequence[Order],
    points: Sequence[tuple[int, int, float, float, float]],
    bars_processed: int,
    ending_equity: float,
    starting_cash: float,
) -> None:
    """One chunk of a replay, in one transaction: its new fills, changed orders, equity points
    (already thinned) and the run row's counts. Raises RunClosed if a stop closed the run: from
    the stop's commit the ledger takes no bar, order or fill of the replay."""
    with transaction.atomic():
        run = PaperTradingRun.objects.select_for_update().get(pk=run_id)
        if run.is_terminal:
            raise RunClosed(run.status)
        orders_upsert(run=run, orders=orders)
        fills_insert(run_id=run.pk, fills=fills)
        equity_rows_insert(run_id=run.pk, rows=points)
        PaperTradingRun.objects.filter(pk=run.pk).update(
            num_fills=_fill_count(run.pk) if fills else run.num_fills, bars_processed=bars_processed,
            ending_equity=ending_equity, total_pnl=ending_equity - starting_cash, updated_at=timezone.now())


def run_release(*, run_id: str, worker_id: str, frames: Sequence[dict] = ()) -> bool:
    """Give up a running run's lease (worker shutting down) so any worker may claim it at once.

    False if the run is terminal or `worker_id` no longer holds it.
    """
    with transaction.atomic():
        run = PaperTradingRun.objects.select_for_update().get(pk=run_id)
        if run.is_terminal or run.worker_id != worker_id:
            return False
        frames_record(run=run, frames=frames)
        PaperTradingRun.objects.filter(pk=run.pk).update(worker_id="", updated_at=timezone.now())
    return True


LEASE_LOST = "lease_lost"


def run_heartbeat(*, run_id: str, worker_id: str | None = None) -> str:
    """Touch the heartbeat; returns the run's stop request ('' if none), or LEASE_LOST when
    `worker_id` no longer holds the run.

    A database hiccup is not a reason to stop a session: it answers '' and the next poll retries.
    """
    from django.db import DatabaseError

    try:
        return _run_heartbeat(run_id, worker_id)
    except DatabaseError:
        import logging

        logging.getLogger(__name__).warning("heartbeat of %s failed; retrying next poll", run_id, exc_info=True)
        connection.close()
        return ""


def _run_heartbeat(run_id: str, worker_id: str | None) -> str:
    live = PaperTradingRun.objects.filter(pk=run_id, status=RunStatus.RUNNING)
    if worker_id is not None:
        live = live.filter(worker_id=worker_id)
    live.update(updated_at=timezone.now())
    row = PaperTradingRun.objects.filter(pk=run_id).values("stop_requested", "status", "worker_id").first()
    if row is None:
        return "deleted"
    if row["status"] in (RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.ABORTED):
        return row["stop_requested"] or f"run is {row['status']}"
    if worker_id is not None and row["worker_id"] != worker_id:
        return LEASE_LOST
    return row["stop_requested"]


def _awaits_epilogue(run: PaperTradingRun, worker_id: str | None, result: RunResult,
                     new_fills: Sequence[Fill] | None) -> bool:
    """Closed by a stop, epilogue not yet written, this worker's, and `result` is the ledger's."""
    return (run.status == RunStatus.ABORTED and bool(run.stop_requested) and not run.metrics
            and (worker_id is None or run.worker_id == worker_id)
            and len(result.equity) == run.bars_processed and not new_fills)


def run_close_from_ledger(*, run: PaperTradingRun) -> int:
    """The epilogue of a run no session will finish (stopped or lost with no worker running it):
    what its session would have written at its end, from what the ledger holds.

    Its open orders are canceled (reason "run stopped: <the run's reason>", at its last recorded
    bar, as the engine's stop cancels them) and its metrics are measured from its equity points
    and fills by the engine's own compute_metrics. Call with the terminal run's row locked; a run
    that already has metrics (its session wrote its epilogue) is left as it is. Returns the
    number of orders canceled.
    """
    from ledger.selectors import run_engine_fills
    from paper.engine.metrics import compute_metrics
    from paper.engine.orders import OrderStatus

    if run.metrics:
        return 0
    points = list(PaperEquityPoint.objects.filter(paper_run=run).order_by("bar_index")
                  .values_list("ts", "equity", "position"))
    at = points[-1][0] if points else (run.ended_at or timezone.now())
    canceled = PaperOrder.objects.filter(
        paper_run=run, status__in=[s for s in OrderStatus if s.is_open],
    ).update(status=str(OrderStatus.CANCELED), reason=f"run stopped: {run.status_reason}"[:300], updated_at=at)
    try:
        run.metrics = compute_metrics(
            equity=np.array([e for _, e, _ in points], dtype=np.float64),
            ts=np.array([int(t.timestamp()) for t, _, _ in points], dtype=np.int64),
            timeframe=run.timeframe, starting_cash=run.starting_cash, fills=run_engine_fills(run=run),
            position=np.array([q for _, _, q in points], dtype=np.float64),
        )
    except ValueError as exc:  # a ledger the engine would not have written (NaN equity): say so, unmeasured
        log.warning("run %s: no metrics from its ledger: %s", run.pk, exc)
        return canceled
    run.save(update_fields=["metrics", "updated_at"])
    return canceled


def run_finish(
    *,
    run_id: str,
    result: RunResult,
    status: str,
    status_reason: str,
    frames: Sequence[dict] = (),
    error_type: str = "",
    error_message: str = "",
    new_fills: Sequence[Fill] | None = None,
    changed_orders: Sequence[Order] | None = None,
    worker_id: str | None = None,
) -> PaperTradingRun:
    """Close a live run: remaining orders/fills, metrics, final status and terminal frame.

    `new_fills` / `changed_orders` (when given) are what the session has not written yet;
    by default every fill and order of the result is (idempotently) written.

    A run a stop already closed (paper.sessions.sessions_stop) keeps the stop's status, reason
    and end time, and its ledger as of its last recorded bar. Its session then writes only its
    epilogue: the goodbye frame, the orders the stop cancelled and the final metrics, once, by
    the worker holding the run, and only from an engine at the ledger's last bar (no fill).
    Any other terminal run takes the goodbye frame alone.
    """
    with transaction.atomic():
        run = PaperTradingRun.objects.select_for_update().get(pk=run_id)
        if run.is_terminal:
            frames_record(run=run, frames=frames)
            if _awaits_epilogue(run, worker_id, result, new_fills):
                orders_upsert(run=run, orders=result.orders if changed_orders is None else changed_orders)
                run.ending_equity = result.final_equity
                run.total_pnl = result.final_equity - run.starting_cash
                run.metrics = result.metrics
                run.halt = result.halt.to_dict() if result.halt else None
                run.save(update_fields=["ending_equity", "total_pnl", "metrics", "halt", "updated_at"])
            return run
        _check_lease(run, worker_id)
        orders_upsert(run=run, orders=result.orders if changed_orders is None else changed_orders)
        fills = result.fills if new_fills is None else new_fills
        fills_insert(run_id=run.pk, fills=fills)
        frames_record(run=run, frames=frames)
        run.status = status
        run.status_reason = status_reason[:200]
        run.error_type = error_type[:100]
        run.error_message = error_message
        run.ended_at = timezone.now()
        run.num_fills = _fill_count(run.pk)
        run.ending_equity = result.final_equity
        run.total_pnl = result.final_equity - run.starting_cash
        run.bars_processed = len(result.equity)
        run.metrics = result.metrics
        run.halt = result.halt.to_dict() if result.halt else None
        # Only what changed: a kill switch ends many sessions at once, each one's write counts.
        run.save(update_fields=["status", "status_reason", "error_type", "error_message", "ended_at", "num_fills",
                                "ending_equity", "total_pnl", "bars_processed", "metrics", "halt", "updated_at"])
    return run
