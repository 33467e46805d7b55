"""`manage.py import_bars FILE --symbol S --timeframe TF`: import one CSV bar file.

A bad file exits with status 2 and a `file:line: reason` message; nothing is written.
"""
from django.core.management.base import BaseCommand, CommandError

from paper.engine.bars import TIMEFRAME_SECONDS
from paper.services import ImportResult, bars_import


def format_result(result: ImportResult) -> str:
    """One line per import, shared with load_sample_data."""
    fmt = "%Y-%m-%d" if result.timeframe == "1d" else "%Y-%m-%d %H:%M"
    return (
        f"imported {result.symbol} {result.timeframe} from {result.path}: {result.total} rows "
        f"({result.created} new, {result.updated} updated, {result.unchanged} unchanged), "
        f"{result.first_ts:{fmt}} .. {result.last_ts:{fmt}}"
    )


class Command(BaseCommand):
    help = "Import OHLCV bars from a CSV file (Yahoo or timestamp,open,high,low,close,volume)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("file", help="CSV file to import")
        parser.add_argument("--symbol", required=True, help="e.g. ETH-USD")
        parser.add_argument("--timeframe", required=True, choices=list(TIMEFRAME_SECONDS))

    def handle(self, *args, **options) -> None:
        path = options["file"]
        try:
            result = bars_import(path=path, symbol=options["symbol"], timeframe=options["timeframe"])
        except OSError as exc:
            raise CommandError(f"{path}: {exc.strerror or exc}", returncode=2) from exc
        except ValueError as exc:  # BarFileError carries "file:line: reason"
            raise CommandError(str(exc), returncode=2) from exc
        self.stdout.write(format_result(result))
