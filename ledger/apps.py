from django.apps import AppConfig


class LedgerConfig(AppConfig):
    name = "ledger"
    verbose_name = "Paper ledger: runs, orders, fills, equity"

    def ready(self) -> None:
        from django.db.backends.signals import connection_created

        from config.postgres import use_fast_timestamps

        connection_created.connect(use_fast_timestamps, dispatch_uid="config.postgres.use_fast_timestamps")
