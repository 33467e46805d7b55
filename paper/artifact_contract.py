"""The paper-session artifact folder: file names, status vocabulary and JSON keys (one home).

No Django imports: the runbook commands read a copied artifact root without the database.

    <root>/<session_id>/                       root default: OUTPUTS_DIR/paper_sessions
        session_metadata.json   identity, creation context, request id
        session_status.json     lifecycle: status, timing, terminal, reason, heartbeat, error
        config.json             the bot config (canonical) and the run/session plan
        metrics.json            the metrics, plus total_pnl, num_fills, ending_equity, halt
        report.json             canonical result, with machine_contract
        run_report.md           human report, shows artifacts/*.png
        trades.csv              one row per fill, as paper_fills holds them
        artifacts/equity.png    equity curve
        artifacts/drawdown.png  drawdown curve

session_metadata.json keys: schema_version, session_id, mode ("replay" | "live"), command
("run"), created_at, request_id, bot_id, bot_name, strategy, ticker, timeframe, data_source,
data_label, start, end, starting_cash, seed, config_hash, host, pid.

session_status.json keys: schema_version, session_id, status, terminal, status_reason,
started_at, finished_at, duration_seconds, updated_at, bars_processed, bars_total,
error_type, error_message. Times are ISO-8601 UTC ("2026-11-21T08:15:00+00:00").

metrics.json keys: the engine's metrics (total_return, cagr, sharpe, sortino, max_drawdown,
win_rate, profit_factor, exposure, num_trades, num_fills, total_fees, final_equity, bars,
...) plus total_pnl, ending_equity, starting_cash, halt (null or the breach).

report.json keys: machine_contract {contract_type, schema_version, request_id}, session_id,
status, status_reason, terminal, metrics, data {ticker, timeframe, start, end, bars, label},
artifacts {name: path relative to the session folder}.
"""
from __future__ import annotations

SCHEMA_VERSION = "1.0"
PAPER_CONTRACT_TYPE = "quantlab.paper.result"
RUN_CONTRACT_TYPE = "quantlab.run.result"

# Statuses: the same words in the DB (paper_trading_runs.status), the API, artifacts and CLI.
RUNNING = "running"
SUCCESS = "success"
FAILED = "failed"
ABORTED = "aborted"
STATUSES = (RUNNING, SUCCESS, FAILED, ABORTED)
TERMINAL = (SUCCESS, FAILED, ABORTED)

METADATA = "session_metadata.json"
STATUS = "session_status.json"
CONFIG = "config.json"
METRICS = "metrics.json"
REPORT = "report.json"
RUN_REPORT = "run_report.md"
TRADES = "trades.csv"
ARTIFACTS_DIR = "artifacts"
EQUITY_PNG = "artifacts/equity.png"
DRAWDOWN_PNG = "artifacts/drawdown.png"

# Every file a complete session folder holds (the promotion contract checks them).
CANONICAL_FILES = (METADATA, STATUS, CONFIG, METRICS, REPORT, RUN_REPORT, TRADES, EQUITY_PNG, DRAWDOWN_PNG)

TRADES_COLUMNS = ("fill_id", "order_id", "symbol", "side", "qty", "price", "fee", "liquidity", "filled_at", "bar_index")

INDEX_CSV = "paper_sessions_index.csv"
INDEX_JSON = "paper_sessions_index.json"
RUNS_INDEX_CSV = "runs_index.csv"
RUNS_INDEX_JSON = "runs_index.json"

# Alert codes of the alert snapshot.
ALERT_FAILED = "PAPER_SESSION_FAILED"
ALERT_ABORTED = "PAPER_SESSION_ABORTED"
ALERT_STALE = "PAPER_SESSION_STALE"
ALERT_UNREADABLE = "PAPER_SESSION_UNREADABLE"
# A session that recovered from a fault (its worker died and it resumed elsewhere, or it waited
# out a database outage): it may have ended well, but an operator should know it happened.
ALERT_INCIDENT = "PAPER_SESSION_INCIDENT"

# status_reason codes a risk halt / kill switch / operator stop start with.
REASON_RISK_HALT = "risk_halt"
