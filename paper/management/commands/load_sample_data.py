"""`manage.py load_sample_data`: import the vendored ETH-USD and BTC-USD daily bars.

Idempotent; a second run reports every bar as unchanged.
"""
from django.core.management.base import BaseCommand

from paper.management.commands.import_bars import format_result
from paper.services import sample_data_load


class Command(BaseCommand):
    help = "Import the sample bar files shipped in paper/sample_data."

    def handle(self, *args, **options) -> None:
        for result in sample_data_load():
            self.stdout.write(format_result(result))
