"""Writes to the paper ledger: create a run, record fills as they happen, persist a result.

Every write is one transaction and idempotent: fills are unique per (run, fill id).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from django.db import connection, transaction
from django.utils import timezone

from ledger.models import PaperEquityPoint, PaperFill, PaperOrder, PaperTradingRun, RunStatus
from paper.engine.engine import RunResult
from paper.engine.orders import Fill, Order

BATCH = 2000


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
) -> PaperTradingRun:
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
        **kwargs,
    )


def run_mark_running(*, run: PaperTradingRun) -> PaperTradingRun:
    run.status = RunStatus.RUNNING
    run.started_at = run.started_at or timezone.now()
    run.save(update_fields=["status", "started_at", "updated_at"])
    return run


def _fill_rows(run: PaperTradingRun, fills: Iterable[Fill]) -> list[PaperFill]:
    return [
        PaperFill(
            paper_run=run,
            fill_id=f.fill_id,
            order_id=f.client_order_id,
            symbol=f.symbol,
            side=str(f.side),
            qty=f.qty,
            price=f.price,
            fee=f.fee,
            liquidity=str(f.liquidity),
            bar_index=f.bar_index,
            filled_at=_dt(f.ts),
        )
        for f in fills
    ]


def _order_rows(run: PaperTradingRun, orders: Iterable[Order]) -> list[PaperOrder]:
    return [
        PaperOrder(
            paper_run=run,
            order_id=o.client_order_id,
            symbol=o.symbol,
            side=str(o.side),
            type=str(o.type),
            qty=o.qty if isinstance(o.qty, float) and o.qty == o.qty else 0.0,
            limit_price=o.limit_price,
            stop_price=o.stop_price,
            tif=str(o.tif),
            status=str(o.status),
            filled_qty=o.filled_qty,
            avg_fill_price=o.avg_fill_price if o.filled_qty else None,
            reason=o.reason[:300],
            bar_index=o.created_bar,
            created_at=_dt(o.created_ts),
            updated_at=_dt(o.updated_ts),
        )
        for o in orders
    ]


def orders_upsert(*, run: PaperTradingRun, orders: Sequence[Order]) -> None:
    """Insert new orders and update the status of known ones, keyed on (run, order id)."""
    if not orders:
        return
    PaperOrder.objects.bulk_create(
        _order_rows(run, orders),
        batch_size=BATCH,
        update_conflicts=True,
        unique_fields=["paper_run", "order_id"],
        update_fields=["status", "filled_qty", "avg_fill_price", "reason", "updated_at", "qty"],
    )


def fills_record(*, run: PaperTradingRun, fills: Sequence[Fill]) -> int:
    """Record fills; a fill already recorded is skipped. Returns the run's fill count."""
    with transaction.atomic():
        if fills:
            PaperFill.objects.bulk_create(_fill_rows(run, fills), batch_size=BATCH, ignore_conflicts=True)
        run.num_fills = PaperFill.objects.filter(paper_run=run).count()
        PaperTradingRun.objects.filter(pk=run.pk).update(num_fills=run.num_fills, updated_at=timezone.now())
    return run.num_fills


def equity_points_record(*, run: PaperTradingRun, result: RunResult, start: int = 0) -> None:
    """Insert equity points from bar `start` on; a point already stored is skipped.

    Raw SQL with ON CONFLICT DO NOTHING: the ORM's per-row model objects cost ~30 us a
    row, far too slow for million-bar replays.
    """
    n = len(result.equity)
    if start >= n:
        return
    table = PaperEquityPoint._meta.db_table
    columns = "paper_run_id, bar_index, ts, equity, cash, position"
    ts = result.ts.tolist()
    off = result.bar_offset  # equity points carry the same absolute bar index as fills
    equity = result.equity.tolist()
    cash = result.cash.tolist()
    position = result.position.tolist()
    if connection.vendor == "postgresql":
        # COPY into a staging table, then one INSERT .. ON CONFLICT: executemany through
        # the driver is ~30x slower on PostgreSQL.
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "CREATE TEMP TABLE IF NOT EXISTS equity_stage (paper_run_id varchar(40), bar_index integer, "
                "ts bigint, equity double precision, cash double precision, position double precision) "
                "ON COMMIT DELETE ROWS"
            )
            cursor.execute("TRUNCATE equity_stage")
            rid = run.pk
            # repr() of a float round-trips exactly; one text block beats write_row per row.
            block = "".join(
                f"{rid}\t{off + i}\t{ts[i]}\t{equity[i]!r}\t{cash[i]!r}\t{position[i]!r}\n" for i in range(start, n)
            )
            with cursor.cursor.copy(f"COPY equity_stage ({columns}) FROM STDIN") as copy:
                copy.write(block)
            cursor.execute(
                f"INSERT INTO {table} ({columns}) SELECT paper_run_id, bar_index, to_timestamp(ts), "
                "equity, cash, position FROM equity_stage ON CONFLICT (paper_run_id, bar_index) DO NOTHING"
            )
        return
    adapt = connection.ops.adapt_datetimefield_value
    rows = [(run.pk, off + i, adapt(_dt(ts[i])), equity[i], cash[i], position[i]) for i in range(start, n)]
    sql = (
        f"INSERT INTO {table} ({columns}) "
        "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (paper_run_id, bar_index) DO NOTHING"
    )
    with connection.cursor() as cursor:
        for lo in range(0, len(rows), 50_000):
            cursor.executemany(sql, rows[lo : lo + 50_000])


def run_persist(
    *,
    run: PaperTradingRun,
    result: RunResult,
    status: str,
    status_reason: str = "",
    error_type: str = "",
    error_message: str = "",
) -> PaperTradingRun:
    """Write a run's orders, fills and equity and close the run row, in one transaction.

    Safe to call twice with the same result: nothing is duplicated.
    """
    with transaction.atomic():
        orders_upsert(run=run, orders=result.orders)
        if result.fills:
            PaperFill.objects.bulk_create(_fill_rows(run, result.fills), batch_size=BATCH, ignore_conflicts=True)
        equity_points_record(run=run, result=result)
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
        run.save()
    return run


class RunClosed(Exception):
    """The run row is terminal (stopped or forced aborted): a session must write nothing more."""


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
) -> None:
    """One live bar, in one transaction: new fills, changed orders, the equity point, frames,
    and the run row (counts, P&L, heartbeat). Raises RunClosed if the run is already terminal.

    The run row is locked first, so a concurrent force-abort and this write never interleave.
    """
    with transaction.atomic():
        run = PaperTradingRun.objects.select_for_update().get(pk=run_id)
        if run.is_terminal:
            raise RunClosed(run.status)
        orders_upsert(run=run, orders=orders)
        if fills:
            PaperFill.objects.bulk_create(_fill_rows(run, fills), ignore_conflicts=True)
        if equity_point is not None:
            bar_index, ts, equity, cash, position = equity_point
            PaperEquityPoint.objects.bulk_create(
                [PaperEquityPoint(paper_run=run, bar_index=bar_index, ts=_dt(ts), equity=equity, cash=cash, position=position)],
                ignore_conflicts=True,
            )
        frames_record(run=run, frames=frames)
        num_fills = run.num_fills + len(fills) if fills else run.num_fills
        PaperTradingRun.objects.filter(pk=run.pk).update(
            num_fills=num_fills,
            total_pnl=ending_equity - starting_cash,
            ending_equity=ending_equity,
            bars_processed=bars_processed,
            updated_at=timezone.now(),
        )


def frames_record(*, run: PaperTradingRun, frames: Sequence[dict]) -> None:
    from ledger.models import PaperFrame

    if not frames:
        return
    PaperFrame.objects.bulk_create(
        [
            PaperFrame(
                paper_run=run,
                seq=f["seq"],
                stage=f["stage"],
                message=str(f["message"])[:300],
                payload=f,
                created_at=datetime.fromisoformat(f["timestamp"]),
            )
            for f in frames
        ],
        ignore_conflicts=True,
    )


def run_heartbeat(*, run_id: str) -> str:
    """Touch the heartbeat; returns the run's stop request ('' if none).

    A database hiccup is not a reason to stop a session: it answers '' and the next poll retries.
    """
    from django.db import DatabaseError

    try:
        return _run_heartbeat(run_id)
    except DatabaseError:
        import logging

        logging.getLogger(__name__).warning("heartbeat of %s failed; retrying next poll", run_id, exc_info=True)
        connection.close()
        return ""


def _run_heartbeat(run_id: str) -> str:
    PaperTradingRun.objects.filter(pk=run_id, status=RunStatus.RUNNING).update(updated_at=timezone.now())
    row = PaperTradingRun.objects.filter(pk=run_id).values("stop_requested", "status").first()
    if row is None:
        return "deleted"
    if row["status"] in (RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.ABORTED):
        return row["stop_requested"] or f"run is {row['status']}"
    return row["stop_requested"]


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
) -> PaperTradingRun:
    """Close a live run: remaining orders/fills, metrics, final status and terminal frame.

    `new_fills` / `changed_orders` (when given) are what the session has not written yet;
    by default every fill and order of the result is (idempotently) written.
    """
    with transaction.atomic():
        run = PaperTradingRun.objects.select_for_update().get(pk=run_id)
        if run.is_terminal:
            # Forced terminal by a stop that timed out: the ledger as of its last bar stands;
            # nothing the session did after that is recorded, except its goodbye frame.
            frames_record(run=run, frames=frames)
            return run
        orders_upsert(run=run, orders=result.orders if changed_orders is None else changed_orders)
        fills = result.fills if new_fills is None else new_fills
        if fills:
            PaperFill.objects.bulk_create(_fill_rows(run, fills), batch_size=BATCH, ignore_conflicts=True)
        frames_record(run=run, frames=frames)
        run.status = status
        run.status_reason = status_reason[:200]
        run.error_type = error_type[:100]
        run.error_message = error_message
        run.ended_at = timezone.now()
        run.num_fills = PaperFill.objects.filter(paper_run=run).count() if new_fills is None else run.num_fills + len(fills)
        run.ending_equity = result.final_equity
        run.total_pnl = result.final_equity - run.starting_cash
        run.bars_processed = len(result.equity)
        run.metrics = result.metrics
        run.halt = result.halt.to_dict() if result.halt else None
        run.save()
    return run
