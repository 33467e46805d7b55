from django.apps import AppConfig


class PaperConfig(AppConfig):
    name = "paper"
    verbose_name = "Paper trading: market data, sessions and the simulation engine"

    def ready(self) -> None:
        from django.conf import settings

        from paper.engine import strategy
        from paper.sessions import sessions_stop

        # Read at each lookup, so a changed setting (and a test's override) applies at once.
        strategy.allowed_packages = lambda: tuple(settings.PAPER_STRATEGY_PACKAGES)
        from risk.registry import HaltReport, register_halt_handler

        def stop_all_sessions(reason: str) -> HaltReport:
            report = sessions_stop(run_ids=None, reason=reason)
            return HaltReport(subsystem="paper", stopped=report["stopped"], detail="paper sessions stopped")

        register_halt_handler("paper", stop_all_sessions)
