"""Admin for the bar store (browse and filter imported bars) and for API tokens (see and revoke).

Bars are read-only here; they change only through `import_bars` so every write is validated.
Tokens are read-only too: they are made with `manage.py create_api_token` (the raw token is shown
once, there) and the admin revokes them; their hash is never shown.
"""
from django.contrib import admin, messages

from paper.models import ApiToken, Bar
from paper.tokens import api_token_revoke


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


class ActiveFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("active", "active"), ("revoked", "revoked")]

    def queryset(self, request, queryset):
        if self.value() == "active":
            return queryset.filter(revoked_at__isnull=True)
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        return queryset


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("prefix", "name", "user", "created_at", "last_used_at", "revoked_at")
    list_filter = (ActiveFilter, "user")
    search_fields = ("prefix", "name", "user__username")
    list_select_related = ("user",)
    fields = ("prefix", "name", "user", "created_at", "last_used_at", "revoked_at")  # never token_hash
    readonly_fields = fields
    actions = ["revoke_selected"]

    def has_add_permission(self, request) -> bool:
        return False  # `manage.py create_api_token USER`: the raw token must be shown once, to its owner

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # revoke instead: the row says when, and last_used_at stays readable

    @admin.action(description="Revoke the selected tokens", permissions=["change"])
    def revoke_selected(self, request, queryset):
        fresh = [t for t in queryset.select_related("user") if t.revoked_at is None]
        for token in fresh:
            api_token_revoke(token=token)
        self.message_user(request, f"Revoked {len(fresh)} token(s); {queryset.count() - len(fresh)} were already revoked.",
                          messages.SUCCESS)
