from django.apps import AppConfig


class PaperConfig(AppConfig):
    name = "paper"
    verbose_name = "Paper trading: market data, sessions and the simulation engine"

    def ready(self) -> None:
        from django.conf import settings

        from paper.engine import strategy

        # Read at each lookup, so a changed setting (and a test's override) applies at once.
        strategy.allowed_packages = lambda: tuple(settings.PAPER_STRATEGY_PACKAGES)
