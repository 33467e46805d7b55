"""`manage.py run`: the runbook's run surface (paper replays, research runs) and its
operator commands (--paper-sessions-list / -show / -health / -alerts / -index / -promotion)."""
from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from pydantic import ValidationError

from config.errors import AppError

EXIT_FAILED, EXIT_BAD_INPUT, EXIT_ABORTED = 1, 2, 3


def _paper_root() -> str:
    return str(settings.OUTPUTS_DIR / "paper_sessions")


class Command(BaseCommand):
    help = ("Run a paper-backed replay (--paper) or a research run, or operate paper sessions "
            "(--paper-sessions-list/-show/-health/-alerts/-index/-promotion).")

    def add_arguments(self, parser):
        run = parser.add_argument_group("run")
        run.add_argument("--ticker", help="symbol (default ETH-USD)")
        run.add_argument("--start", help="first day YYYY-MM-DD (default: all stored data)")
        run.add_argument("--end", help="last day YYYY-MM-DD, inclusive")
        run.add_argument("--paper", action="store_true", help="a paper session (outputs/paper_sessions/<id>/)")
        run.add_argument("--report", action="store_true", help="print the run report when done")
        run.add_argument("--bot", help="bot id or name (default: the demo bot, unless --strategy)")
        run.add_argument("--strategy", help="strategy name or dotted path, instead of --bot")
        run.add_argument("--params", help="strategy params as JSON, with --strategy")
        run.add_argument("--timeframe", help="bar timeframe with --strategy (default 1d)")
        run.add_argument("--starting-cash", type=float, help="default 100000")
        run.add_argument("--seed", type=int, help="default 0")
        run.add_argument("--data-source", choices=["stored", "synthetic"], help="default stored")
        run.add_argument("--bars", type=int, help="number of synthetic bars (with --data-source synthetic)")
        run.add_argument("--output-root", help="artifact root (default outputs/paper_sessions or outputs/runs)")
        run.add_argument("--json-request", help='{"schema_version":"1.0","request_id":...,"command":"run","params":{...}}, '
                                                "or @FILE to read it from a file")
        run.add_argument("--signal-file", help="append JSON-line signal events (mode=run) here")
        ops = parser.add_argument_group("paper-session operations (each takes the artifact root)")
        ops.add_argument("--paper-sessions-list", nargs="?", const=_paper_root(), metavar="ROOT")
        ops.add_argument("--paper-sessions-show", metavar="SESSION_DIR_OR_ID")
        ops.add_argument("--paper-sessions-health", nargs="?", const=_paper_root(), metavar="ROOT")
        ops.add_argument("--paper-sessions-alerts", nargs="?", const=_paper_root(), metavar="ROOT")
        ops.add_argument("--paper-stale-minutes", type=float, default=60.0)
        ops.add_argument("--paper-sessions-index", nargs="?", const=_paper_root(), metavar="ROOT")
        ops.add_argument("--paper-sessions-promotion", nargs="?", const=_paper_root(), metavar="ROOT")
        ops.add_argument("--paper-sessions-root", help="root for --paper-sessions-show with a bare id")
        ops.add_argument("--min-bars", type=int)
        ops.add_argument("--min-trades", type=int)
        ops.add_argument("--min-sharpe", type=float)
        ops.add_argument("--max-drawdown", type=float, help="fraction, e.g. 0.35")
        ops.add_argument("--json", action="store_true", help="machine-readable output")

    def handle(self, *args, **o):
        ops = [k for k in ("paper_sessions_list", "paper_sessions_show", "paper_sessions_health",
                           "paper_sessions_alerts", "paper_sessions_index", "paper_sessions_promotion") if o.get(k)]
        if len(ops) > 1:
            raise CommandError("give one --paper-sessions-* operation at a time", returncode=EXIT_BAD_INPUT)
        if ops:
            return self._operate(ops[0], o)
        return self._run(o)

    # -- run ---------------------------------------------------------------------------------------
    def _run(self, o) -> None:
        from paper import replay

        request_id = ""
        try:
            # `is not None`: an empty --json-request is a bad request, not "no request" (it ran the default run).
            if o["json_request"] is not None:
                if any(o[k] is not None and o[k] is not False for k in
                       ("ticker", "start", "end", "bot", "strategy", "params", "timeframe", "starting_cash",
                        "seed", "data_source", "bars", "output_root")) or o["paper"] or o["report"]:
                    raise replay.RunRequestError("give either --json-request or run flags, not both")
                request = replay.parse_json_request(self._json_request_text(o["json_request"]))
                params, request_id = request.params, request.request_id
            else:
                params = replay.RunParams.model_validate(self._flags(o), strict=False)
        except replay.RunRequestError as exc:
            raise CommandError(str(exc), returncode=EXIT_BAD_INPUT) from None
        except ValidationError as exc:
            raise CommandError(f"invalid run flags: {replay._errors_text(exc, '--')}", returncode=EXIT_BAD_INPUT) from None
        signals = replay.SignalFile(Path(o["signal_file"]) if o["signal_file"] is not None else None)
        stop = replay.StopFlag()
        restore = stop.install_signal_handlers()
        try:
            if params.paper:
                outcome = replay.paper_replay(params=params, request_id=request_id, signals=signals, stop=stop,
                                              progress_factory=self._progress)
            else:
                outcome = replay.research_run(params=params, request_id=request_id, signals=signals)
        except replay.RunRequestError as exc:
            raise CommandError(str(exc), returncode=EXIT_BAD_INPUT) from None
        except AppError as exc:
            raise CommandError(exc.message, returncode=EXIT_BAD_INPUT) from None
        finally:
            restore()
        kind = "paper session" if outcome.paper else "research run"
        self.stdout.write(f"{kind} {outcome.run_id}: {outcome.status} ({outcome.status_reason})")
        self.stdout.write(f"artifacts: {outcome.artifact_dir}")
        if params.report:
            self.stdout.write((outcome.artifact_dir / "run_report.md").read_text())
        if outcome.status == "failed":
            raise CommandError(f"{kind} {outcome.run_id} failed: {outcome.status_reason}", returncode=EXIT_FAILED)
        if outcome.status == "aborted":
            raise CommandError(f"{kind} {outcome.run_id} aborted: {outcome.status_reason}", returncode=EXIT_ABORTED)

    @staticmethod
    def _json_request_text(value: str) -> str:
        """The request itself, or with `@FILE` the text of that file (UTF-8, at most 1 MB)."""
        from paper.replay import MAX_JSON_REQUEST, RunRequestError

        if not value.startswith("@"):
            return value
        path = Path(value[1:])
        try:
            if "\x00" not in value and path.is_dir():
                raise RunRequestError(f"--json-request {value}: a folder, not a file")
            if "\x00" in value or not path.is_file():
                raise RunRequestError(f"--json-request {value}: no such file")
            if path.stat().st_size > MAX_JSON_REQUEST:
                raise RunRequestError(f"--json-request {value}: the file is larger than {MAX_JSON_REQUEST:,} bytes")
            return path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RunRequestError(f"--json-request {value}: not UTF-8 text (byte {exc.start})") from None
        except OSError as exc:
            raise RunRequestError(f"--json-request {value}: unreadable ({exc.strerror or exc})") from None

    @staticmethod
    def _flags(o) -> dict:
        flags = {k: o[k] for k in ("ticker", "start", "end", "bot", "strategy", "timeframe", "starting_cash",
                                   "seed", "data_source", "bars", "output_root") if o[k] is not None}
        flags["paper"], flags["report"] = bool(o["paper"]), bool(o["report"])
        if o["params"] is not None:
            from paper.replay import RunRequestError

            try:
                flags["params"] = json.loads(o["params"])
            except json.JSONDecodeError as exc:
                raise RunRequestError(f"--params is not valid JSON: {exc}") from None
            except RecursionError:
                raise RunRequestError("--params is not valid JSON: nested too deeply") from None
        return flags

    @staticmethod
    def _progress(total: int):
        from tqdm import tqdm

        # A progress bar on a terminal only; quiet when stderr is not a TTY (CI, pipes, cron).
        return tqdm(total=total, unit="bar", unit_scale=True, disable=not sys.stderr.isatty(), file=sys.stderr)

    # -- operator commands -----------------------------------------------------------------------
    def _operate(self, op: str, o) -> None:
        from paper import runbook

        now = datetime.now(UTC)
        as_json = o["json"]
        try:
            if op == "paper_sessions_show":
                value = o["paper_sessions_show"]
                if "\x00" in value:
                    raise runbook.RunbookError(f"not a paper session folder or id: {value!r}")
                target = Path(value)
                # A path (it has a separator, or something is there) is shown as a folder, even a
                # broken one; a bare name is an id (or a unique prefix) in the root.
                if "/" in value or os.sep in value or target.exists() or target.is_symlink():
                    record = runbook.session_show(target)
                else:
                    record = runbook.session_show(Path(o["paper_sessions_root"] or _paper_root()), value)
                self._emit(record.to_dict() if as_json else runbook.format_show(record), as_json)
                return
            if "\x00" in o[op]:
                raise runbook.RunbookError(f"no such artifact root: {o[op]!r}")
            root = Path(o[op])
            if not root.is_dir():
                raise runbook.RunbookError(f"no such artifact root: {root}")
            if op == "paper_sessions_list":
                records = runbook.sessions_scan(root)
                self._emit([r.to_dict() for r in records] if as_json else runbook.format_list(records), as_json)
            elif op == "paper_sessions_health":
                data = runbook.health(root, now=now)
                self._emit(data if as_json else runbook.format_health(data), as_json)
            elif op == "paper_sessions_alerts":
                if not o["paper_stale_minutes"] > 0:
                    raise runbook.RunbookError("--paper-stale-minutes must be positive")
                data = runbook.alerts(root, now=now, stale_minutes=o["paper_stale_minutes"])
                self._emit(data, True)  # the alert snapshot is JSON by contract
            elif op == "paper_sessions_index":
                csv_path, json_path = runbook.index_write(root)
                self._emit({"csv": str(csv_path), "json": str(json_path)} if as_json
                           else f"wrote {csv_path}\nwrote {json_path}", as_json)
            elif op == "paper_sessions_promotion":
                overrides = {k: o[k] for k in ("min_bars", "min_trades", "min_sharpe", "max_drawdown") if o[k] is not None}
                data = runbook.promotion(root, contract=runbook.PromotionContract(**overrides))
                self._emit(data if as_json else runbook.format_promotion(data), as_json)
        except runbook.RunbookError as exc:
            raise CommandError(str(exc), returncode=EXIT_BAD_INPUT) from None
        except OSError as exc:  # the root itself cannot be read or written (permissions, a full disk)
            raise CommandError(f"{exc.filename or 'artifact root'}: {exc.strerror or exc}",
                               returncode=EXIT_BAD_INPUT) from None

    def _emit(self, value, as_json: bool) -> None:
        from paper.runbook import json_safe, printable

        if as_json:
            # Strict JSON (no NaN) that any reader takes; a folder name that is not UTF-8 is escaped.
            self.stdout.write(json.dumps(json_safe(value), indent=2, sort_keys=True, default=str, allow_nan=False))
        else:
            self.stdout.write(printable(value))
