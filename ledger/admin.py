"""Admin for the paper ledger. Ledger rows are read-only: only services write them."""
from django.contrib import admin, messages
from django.utils.html import format_html

from bots.permissions import run_may_change
from ledger.models import PaperEquityPoint, PaperFill, PaperOrder, PaperTradingRun


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(PaperTradingRun)
class PaperTradingRunAdmin(ReadOnlyAdmin):
    list_display = ("id", "bot", "owner", "status", "status_reason", "mode", "symbol", "total_pnl", "num_fills", "started_at", "ended_at", "updated_at", "dashboard")
    list_select_related = ("bot", "owner")
    actions = ["stop_sessions"]

    @admin.display(description="dashboard")
    def dashboard(self, obj: PaperTradingRun):
        return format_html('<a href="{}">live view</a>', obj.get_absolute_url())

    @admin.action(description="Stop the selected sessions")
    def stop_sessions(self, request, queryset):
        from paper.sessions import sessions_stop

        runs = list(queryset.select_related("owner", "bot__owner"))
        mine = [run.pk for run in runs if run_may_change(request.user, run)]
        if len(mine) < len(runs):
            self.message_user(request, f"skipped {len(runs) - len(mine)} session(s) you may not stop: only who started "
                              "one, its bot's owner or staff may (the kill switch stops everything)", messages.WARNING)
        if not mine:
            return
        report = sessions_stop(run_ids=mine, reason=f"operator_stop: stopped from the admin by {request.user.username}")
        self.message_user(request, f"stopped {report['count']} session(s) in {report['elapsed_ms']:.0f} ms",
                          messages.SUCCESS)
    list_filter = ("status", "mode", "data_source", "timeframe", "bot", "owner")
    search_fields = ("id", "bot__name", "owner__username", "request_id", "status_reason")
    date_hierarchy = "started_at"


@admin.register(PaperOrder)
class PaperOrderAdmin(ReadOnlyAdmin):
    list_display = ("order_id", "paper_run", "symbol", "side", "type", "qty", "limit_price", "stop_price", "tif", "status", "filled_qty", "avg_fill_price", "created_at")
    list_filter = ("status", "side", "type", "tif")
    search_fields = ("order_id", "paper_run__id", "symbol")
    list_select_related = ("paper_run",)


@admin.register(PaperFill)
class PaperFillAdmin(ReadOnlyAdmin):
    list_display = ("fill_id", "paper_run", "order_id", "symbol", "side", "qty", "price", "fee", "liquidity", "filled_at")
    list_filter = ("side", "liquidity", "symbol")
    search_fields = ("fill_id", "order_id", "paper_run__id")
    date_hierarchy = "filled_at"
    list_select_related = ("paper_run",)


@admin.register(PaperEquityPoint)
class PaperEquityPointAdmin(ReadOnlyAdmin):
    list_display = ("paper_run", "bar_index", "ts", "equity", "cash", "position")
    search_fields = ("paper_run__id",)
    list_select_related = ("paper_run",)
