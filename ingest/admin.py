from django.contrib import admin, messages
from django.template.response import TemplateResponse
from django.utils.safestring import mark_safe

from .control import charts, keys, stats
from .control.dead_letters import replay_dead_letters
from .models import DeadLetter, DeliveryOutcome, EventStat, Source
from .pipeline.broker import queue_depth
from .records import loaded_field

PAYLOAD_PREVIEW_CHARS = 120


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
    """Dead letters, one record each: read-only, replayed or purged by the actions."""

    list_display = (
        "created_at",
        "topic",
        "event_id",
        "attempts",
        "short_reason",
        "payload_preview",
        "replayed_at",
    )
    list_filter = ("topic", "replayed_at")
    search_fields = ("batch_id", "reason", "event_ids")
    readonly_fields = ("batch_id", "topic", "reason", "event_ids", "records", "attempts")
    actions = ("replay", "purge")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_replay_permission(self, request):
        """Replay is for whoever may change dead letters, though no form edits one."""
        return request.user.has_perm("ingest.change_deadletter")

    @admin.display(description="event id")
    def event_id(self, dead_letter):
        ids = dead_letter.event_ids
        # Rows from before per-record dead letters may hold several events.
        return ids[0] if len(ids) == 1 else f"{len(ids)} events"

    @admin.display(description="reason")
    def short_reason(self, dead_letter):
        return dead_letter.reason[:80]

    @admin.display(description="payload preview")
    def payload_preview(self, dead_letter):
        if not dead_letter.records:
            return ""
        value = loaded_field(dead_letter.records[0][2])  # [event_id, key, value, ...]
        if isinstance(value, bytes):
            value = f"<{len(value)} bytes> {value[:PAYLOAD_PREVIEW_CHARS].hex()}"
        if len(value) > PAYLOAD_PREVIEW_CHARS:
            return value[:PAYLOAD_PREVIEW_CHARS] + "…"
        return value

    @admin.action(description="Replay selected dead letters to Kafka", permissions=["replay"])
    def replay(self, request, queryset):
        count = replay_dead_letters(dead_letters=queryset)
        self.message_user(request, f"Enqueued {count} events again.", messages.SUCCESS)

    @admin.action(description="Purge selected dead letters", permissions=["delete"])
    def purge(self, request, queryset):
        count, _ = queryset.delete()
        self.message_user(request, f"Purged {count} dead letters.", messages.SUCCESS)


@admin.register(DeliveryOutcome)
class DeliveryOutcomeAdmin(admin.ModelAdmin):
    """What the workers recorded of each batch: read-only."""

    list_display = ("batch_id", "status", "attempts", "short_reason", "accepted_at", "finished_at")
    list_filter = ("status",)
    search_fields = ("batch_id",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="reason")
    def short_reason(self, outcome):
        return outcome.reason[:80]


@admin.register(Source)
class SourceAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "key_prefix",
        "allowed_topics",
        "max_events_per_s",
        "max_bytes_per_s",
        "enabled",
        "created_at",
    )
    list_editable = ("allowed_topics", "max_events_per_s", "max_bytes_per_s", "enabled")
    list_filter = ("enabled",)
    search_fields = ("name", "key_prefix")
    readonly_fields = ("key_prefix", "created_at")
    actions = ("rotate_keys",)

    def save_model(self, request, obj, form, change):
        key = None if change else keys.issue_key(obj)
        super().save_model(request, obj, form, change)
        keys.get_cache().invalidate()
        if key is not None:
            show_key_once(request, obj, key)

    def delete_model(self, request, obj):
        super().delete_model(request, obj)
        keys.get_cache().invalidate()

    @admin.action(description="Issue new API keys (the old ones stop working)")
    def rotate_keys(self, request, queryset):
        for source in queryset:
            key = keys.issue_key(source)
            source.save(update_fields=["key_hash", "key_prefix"])
            show_key_once(request, source, key)
        keys.get_cache().invalidate()


def show_key_once(request, source, key: str) -> None:
    messages.warning(
        request,
        f"API key of source {source.name} (copy it now; only its hash is kept): {key}",
    )


@admin.register(EventStat)
class EventStatAdmin(admin.ModelAdmin):
    """The stats page: its changelist is a chart and per-topic totals, not a table of rows."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def changelist_view(self, request, extra_context=None):
        range_name = request.GET.get("range", "hour")
        if range_name not in stats.RANGES:
            range_name = "hour"
        span_s, step_s = stats.RANGES[range_name]
        overview = stats.overview(span_s=span_s, step_s=step_s)
        chart = charts.line_chart(
            series=overview["points"],
            start=overview["start"],
            step_s=step_s,
            title=f"Events per {step_s // 60} min, last {range_name}",
        )
        context = {
            **self.admin_site.each_context(request),
            "title": "Ingest stats",
            "opts": self.model._meta,
            "range_name": range_name,
            "ranges": list(stats.RANGES),
            "chart": mark_safe(chart),  # built from numbers and escaped names only
            "overview": overview,
            "backlog": backlog_report(),
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/ingest/stats.html", context)


def backlog_report() -> dict:
    try:
        return {"depth": queue_depth(), "error": None}
    except Exception as error:  # the page still shows the stats while the broker is away
        return {"depth": None, "error": f"{type(error).__name__}: {error}"}
