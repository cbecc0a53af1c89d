from django.db import models


class DeliveryOutcome(models.Model):
    """What became of one published batch; receipts and the `delivered` ack level read it."""

    class Status(models.TextChoices):
        DELIVERED = "delivered"
        DEAD_LETTERED = "dead_lettered"

    batch_id = models.CharField(max_length=36, primary_key=True)
    status = models.CharField(max_length=16, choices=Status.choices)
    # One [partition, offset] pair per record, in batch order; empty when dead-lettered.
    offsets = models.JSONField(default=list, blank=True)
    topics = models.JSONField(default=list, blank=True)
    reason = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=1)
    accepted_at = models.DateTimeField()
    finished_at = models.DateTimeField(auto_now=True, db_index=True)

    class Meta:
        ordering = ["-finished_at"]

    def __str__(self):
        return f"{self.batch_id} {self.status}"


class DeadLetter(models.Model):
    """Events that could not be delivered to Kafka; kept until replayed or purged."""

    batch_id = models.CharField(max_length=36, db_index=True)
    topic = models.CharField(max_length=249, db_index=True)
    reason = models.TextField()
    event_ids = models.JSONField(default=list)
    # The records as [event_id, key, value] triples, ready to produce again.
    records = models.JSONField(default=list)
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    replayed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.topic}: {len(self.event_ids)} events ({self.reason[:60]})"
