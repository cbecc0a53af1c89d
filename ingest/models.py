from django.db import models

# Source.allowed_topics that lets a source write to every topic.
EVERY_TOPIC = "*"


class DeliveryOutcome(models.Model):
    """What became of one published batch; receipts and the `delivered` ack level read it."""

    class Status(models.TextChoices):
        DELIVERED = "delivered"
        PARTIALLY_DELIVERED = "partially_delivered"
        DEAD_LETTERED = "dead_lettered"

    batch_id = models.CharField(max_length=36, primary_key=True)
    status = models.CharField(max_length=24, choices=Status.choices)
    # One entry per record, in batch order: [partition, offset], or null for a dead-lettered
    # record. Rows written before per-record outcomes leave it empty for a dead-lettered batch.
    offsets = models.JSONField(default=list, blank=True)
    # {"<record index>": "<reason>"} for each dead-lettered record.
    failures = models.JSONField(default=dict, blank=True)
    topics = models.JSONField(default=list, blank=True)
    # The first dead-lettered record's reason (for older rows: the whole batch's).
    reason = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=1)
    accepted_at = models.DateTimeField()
    finished_at = models.DateTimeField(auto_now=True, db_index=True)

    class Meta:
        ordering = ["-finished_at"]

    def __str__(self):
        return f"{self.batch_id} {self.status}"


class DeadLetter(models.Model):
    """Events that could not be delivered to Kafka; kept until replayed or purged.

    One record per row; rows written before per-record dead letters may hold several.
    """

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


class Source(models.Model):
    """A client of the gateway: its API key (as a hash), allowed topics and rate limits."""

    name = models.SlugField(max_length=64, unique=True)
    # sha256 hex of the key; the key itself is shown once at creation and never stored.
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    key_prefix = models.CharField(max_length=8, editable=False, help_text="first characters")
    allowed_topics = models.TextField(
        blank=True,
        help_text='topic names separated by commas or spaces; "*" allows every topic, '
        "empty allows none",
    )
    # {"segment": "web-events", ...}: the topic each client protocol's events go to; a protocol
    # not named here uses its own default topic (docs/PROTOCOLS.md).
    protocol_topics = models.JSONField(
        default=dict,
        blank=True,
        help_text='topic per client protocol, e.g. {"segment": "web-events"}; '
        "unnamed protocols use their default topic",
    )
    max_events_per_s = models.PositiveIntegerField(
        null=True, blank=True, help_text="events per second per gateway process; empty: no limit"
    )
    max_bytes_per_s = models.PositiveIntegerField(
        null=True, blank=True, help_text="bytes per second per gateway process; empty: no limit"
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def topic_list(self) -> list[str]:
        return self.allowed_topics.replace(",", " ").split()

    def allows_every_topic(self) -> bool:
        return EVERY_TOPIC in self.topic_list()


class EventStat(models.Model):
    """One counter for one minute, topic and source; processes add to it with upserts."""

    minute = models.DateTimeField()
    topic = models.CharField(max_length=249, blank=True)
    source = models.CharField(max_length=64, blank=True)
    # The protocol the events came in by (records.NATIVE_PROTOCOL, "segment", ...); empty for
    # gateway-wide counters.
    protocol = models.CharField(max_length=16, blank=True, default="")
    # accepted, accepted_bytes, rejected:<code>, delivered, dead_lettered, producer_errors,
    # latency_le_<ms> (one delivery-latency histogram bucket, events per bucket).
    metric = models.CharField(max_length=64)
    value = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["minute", "topic", "source", "protocol", "metric"],
                name="event_stat_origin_key",
            )
        ]
        indexes = [models.Index(fields=["metric", "minute"])]

    def __str__(self):
        return (
            f"{self.minute:%Y-%m-%d %H:%M} {self.topic} {self.source} {self.protocol} {self.metric}"
        )
