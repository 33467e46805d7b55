from django.apps import AppConfig


class BotsConfig(AppConfig):
    name = "bots"
    verbose_name = "Bots and backtests"

    def ready(self) -> None:
        from risk.registry import HaltReport, register_halt_handler

        def halt_all_bots(reason: str) -> HaltReport:
            # A bot trades only through its paper sessions: halting bots stops every bot's
            # active sessions; the latch (set by the caller) keeps new ones from starting.
            from ledger.models import PaperTradingRun
            from paper.sessions import ACTIVE, sessions_stop

            bot_ids = sorted(set(PaperTradingRun.objects.filter(status__in=ACTIVE).values_list("bot_id", flat=True)))
            report = sessions_stop(run_ids=None, reason=reason)
            return HaltReport(subsystem="bots", stopped=[f"bot:{b}" for b in bot_ids],
                              detail=f"{report['count']} sessions of {len(bot_ids)} bots stopped")

        register_halt_handler("bots", halt_all_bots)
