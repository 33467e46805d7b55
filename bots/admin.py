"""Admin for bots and their backtests; backtests are read-only records.

Who may change or delete a bot, or backtest it from here, is bots/permissions.py's rule, per row.
"""
from django.contrib import admin, messages
from django.utils.html import format_html

from bots.models import BacktestRun, Bot
from bots.permissions import bot_may_change


class BacktestInline(admin.TabularInline):
    model = BacktestRun
    fields = ("id", "created_at", "sharpe", "total_return", "num_fills", "status", "config_hash")
    readonly_fields = fields
    extra = 0
    max_num = 0
    show_change_link = True
    ordering = ("-created_at",)

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Bot)
class BotAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "strategy", "symbols", "timeframe", "short_hash", "latest_sharpe", "updated_at",
                    "dashboard")
    list_select_related = ("owner",)

    @admin.display(description="dashboard")
    def dashboard(self, obj: Bot):
        return format_html('<a href="{}">open</a>', obj.get_absolute_url())
    list_filter = ("strategy", "timeframe", "owner")
    search_fields = ("name", "strategy", "owner__username")
    readonly_fields = ("config_hash", "created_at", "updated_at")
    inlines = [BacktestInline]
    actions = ["backtest_bots"]

    def get_changeform_initial_data(self, request):
        return {"owner": request.user.pk, **super().get_changeform_initial_data(request)}

    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) and (obj is None or bot_may_change(request.user, obj))

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and (obj is None or bot_may_change(request.user, obj))

    @admin.action(description="Backtest the selected bots (all stored bars)")
    def backtest_bots(self, request, queryset):
        from bots.services import backtest_run
        from config.errors import AppError

        for bot in queryset.select_related("owner"):
            if not bot_may_change(request.user, bot):
                self.message_user(request, f"{bot.name}: skipped, it belongs to {bot.owner_name or 'nobody (staff only)'}",
                                  messages.WARNING)
                continue
            try:
                run = backtest_run(bot=bot)
            except AppError as exc:
                self.message_user(request, f"{bot.name}: {exc.message}", messages.ERROR)
                continue
            sharpe = "n/a" if run.sharpe is None else f"{run.sharpe:.3f}"
            self.message_user(request, f"{bot.name}: backtest {run.pk}, {run.num_bars} bars, sharpe {sharpe}",
                              messages.SUCCESS)

    @admin.display(description="config hash")
    def short_hash(self, obj: Bot) -> str:
        return obj.config_hash[:12]

    @admin.display(description="latest sharpe")
    def latest_sharpe(self, obj: Bot):
        run = obj.backtest_runs.order_by("-created_at").first()
        return None if run is None or run.sharpe is None else round(run.sharpe, 3)


@admin.register(BacktestRun)
class BacktestRunAdmin(admin.ModelAdmin):
    list_display = ("id", "bot", "symbol", "timeframe", "data_source", "start", "end", "sharpe", "total_return", "num_fills", "status", "created_at")
    list_filter = ("status", "data_source", "timeframe", "bot")
    search_fields = ("bot__name", "config_hash", "symbol")
    date_hierarchy = "created_at"
    exclude = ("trades", "equity")

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields if f.name not in ("trades", "equity")]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
