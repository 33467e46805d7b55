"""Admin for the bar store: browse and filter imported bars.

Bars are read-only here; they change only through `import_bars` so every write is validated.
"""
from django.contrib import admin

from paper.models import Bar


@admin.register(Bar)
class BarAdmin(admin.ModelAdmin):
    list_display = ("symbol", "timeframe", "ts", "open", "high", "low", "close", "volume", "source")
    list_filter = ("symbol", "timeframe", "source")
    search_fields = ("symbol",)
    date_hierarchy = "ts"
    # Bar tables get large; skip the unfiltered COUNT(*) on every changelist page.
    show_full_result_count = False

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
