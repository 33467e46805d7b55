"""The walkthrough's two SQL statements (shared/seeds/000_*.txt, Step 5), character for character."""

SEED_RUNS_SQL = """SELECT id, bot_id, status, total_pnl, num_fills, started_at, ended_at
FROM paper_trading_runs ORDER BY started_at DESC LIMIT 1;"""

SEED_FILLS_SQL = """SELECT order_id, symbol, side, qty, price, filled_at
FROM paper_fills
WHERE paper_run_id = '<from_above>'
ORDER BY filled_at;"""
