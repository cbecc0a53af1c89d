from django.contrib import admin, messages

from . import services
from .models import DeadLetter, DeliveryOutcome


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
    list_display = ("created_at", "topic", "event_count", "attempts", "short_reason", "replayed_at")
    list_filter = ("topic", "replayed_at")
    search_fields = ("batch_id", "reason")
    readonly_fields = ("batch_id", "topic", "reason", "event_ids", "records", "attempts")
    actions = ("replay", "purge")

    @admin.display(description="events")
    def event_count(self, dead_letter):
        return len(dead_letter.event_ids)

    @admin.display(description="reason")
    def short_reason(self, dead_letter):
        return dead_letter.reason[:80]

    @admin.action(description="Replay selected dead letters to Kafka")
    def replay(self, request, queryset):
        count = services.replay_dead_letters(dead_letters=queryset)
        self.message_user(request, f"Enqueued {count} events again.", messages.SUCCESS)

    @admin.action(description="Purge selected dead letters")
    def purge(self, request, queryset):
        count, _ = queryset.delete()
        self.message_user(request, f"Purged {count} dead letters.", messages.SUCCESS)


@admin.register(DeliveryOutcome)
class DeliveryOutcomeAdmin(admin.ModelAdmin):
    list_display = ("batch_id", "status", "attempts", "accepted_at", "finished_at")
    list_filter = ("status",)
    search_fields = ("batch_id",)
