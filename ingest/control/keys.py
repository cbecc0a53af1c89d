"""Sources and their API keys, checked against an in-process cache of the source table."""

import base64
import hashlib
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, transaction

from ..models import Source
from ..state import per_process

logger = logging.getLogger(__name__)

KEY_BYTES = 32
KEY_PREFIX_LENGTH = 8


@dataclass(frozen=True)
class SourceInfo:
    """What a request needs to know about its source, without touching the database."""

    name: str
    topics: frozenset[str]
    max_events_per_s: int | None
    max_bytes_per_s: int | None
    every_topic: bool = False  # the source's allowed topics are "*"
    # Topic per client protocol (Source.protocol_topics); left out of the hash, as dicts have none.
    protocol_topics: dict[str, str] = field(default_factory=dict, hash=False)


# Without required keys, a request that sends no key may write to every topic.
ANONYMOUS = SourceInfo(
    name="", topics=frozenset(), max_events_per_s=None, max_bytes_per_s=None, every_topic=True
)


class SourcesUnavailable(Exception):
    """The source table cannot be read and no usable copy of it is in memory."""


class Unauthorized(Exception):
    """The request sent no API key where keys are required, or a key no source has."""


class TopicForbidden(Exception):
    """The source may not send to the topic."""


def generate_key() -> str:
    return secrets.token_urlsafe(KEY_BYTES)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def issue_key(source) -> str:
    """Give `source` a new key, keeping only its hash; return the key to show once."""
    key = generate_key()
    source.key_hash = hash_key(key)
    source.key_prefix = key[:KEY_PREFIX_LENGTH]
    return key


class KeyCache:
    """Every enabled source by key hash, reloaded with one query once `ttl_s` has passed.

    A failed reload leaves the previous table in use for up to `stale_grace_s` past its TTL;
    it is tried again at most once per `retry_s`, by one thread, while the others answer from
    the stale table. Without a usable table (never loaded, or stale past the grace) a lookup
    raises SourcesUnavailable; a thread waits at most `cold_wait_s` for another one's load.

    A key the table does not know reloads it if it is at least `miss_reload_s` old, so a source
    created a moment ago is known at once, and keys nobody has cost at most one query per
    `miss_reload_s`.
    """

    def __init__(
        self,
        *,
        ttl_s: float,
        load,
        stale_grace_s: float = 0.0,
        retry_s: float = 1.0,
        cold_wait_s: float = 5.0,
        miss_reload_s: float = 1.0,
    ):
        self._ttl_s = ttl_s
        self._load = load
        self._stale_grace_s = stale_grace_s
        self._retry_s = retry_s
        self._cold_wait_s = cold_wait_s
        self._miss_reload_s = miss_reload_s
        self._sources: dict[str, SourceInfo] | None = None
        self._loaded_at = float("-inf")
        self._fresh_until = float("-inf")
        self._usable_until = float("-inf")
        self._next_attempt_at = float("-inf")
        self._refresh_lock = threading.Lock()

    def lookup(self, key_hash: str) -> SourceInfo | None:
        """Return the source of a key hash or None; raise SourcesUnavailable without a table."""
        now = time.monotonic()
        sources = self._sources
        if sources is None or now > self._usable_until:
            sources = self._load_or_wait()
        elif now > self._fresh_until and now >= self._next_attempt_at:
            sources = self._refresh_in_passing()
        source = sources.get(key_hash)
        if source is None and self._may_reload_after_miss(now):
            source = self._refresh_in_passing(after_miss=True).get(key_hash)
        return source

    def _may_reload_after_miss(self, now: float) -> bool:
        return now - self._loaded_at >= self._miss_reload_s and now >= self._next_attempt_at

    def invalidate(self) -> None:
        """Reload with the next lookup; the current table stays usable meanwhile."""
        self._fresh_until = float("-inf")
        self._next_attempt_at = float("-inf")

    def _refresh_in_passing(self, *, after_miss: bool = False) -> dict[str, SourceInfo]:
        # One thread reloads; the others keep answering from the stale table meanwhile.
        if self._refresh_lock.acquire(blocking=False):
            try:
                now = time.monotonic()
                due = self._may_reload_after_miss(now) if after_miss else now > self._fresh_until
                if due:
                    self._try_load()
            finally:
                self._refresh_lock.release()
        return self._sources

    def _load_or_wait(self) -> dict[str, SourceInfo]:
        if time.monotonic() < self._next_attempt_at:
            raise SourcesUnavailable("the source table could not be read; retry later")
        if not self._refresh_lock.acquire(timeout=self._cold_wait_s):
            raise SourcesUnavailable("the source table is still loading; retry later")
        try:
            now = time.monotonic()
            if self._sources is not None and now <= self._usable_until:
                return self._sources  # loaded by the thread this one waited for
            if now < self._next_attempt_at or not self._try_load():
                raise SourcesUnavailable("the source table could not be read; retry later")
            return self._sources
        finally:
            self._refresh_lock.release()

    def _try_load(self) -> bool:
        """Load the table; on failure keep the old one and put the next attempt off."""
        try:
            sources = self._load()
        except Exception as error:  # whatever broke the load, requests degrade instead of 500
            self._next_attempt_at = time.monotonic() + self._retry_s
            if self._sources is None:
                logger.warning("cannot load the source table: %r", error)
            else:
                logger.warning(
                    "cannot reload the source table; its copy is %.0fs old: %r",
                    time.monotonic() - self._loaded_at,
                    error,
                )
            return False
        now = time.monotonic()
        self._sources = sources
        self._loaded_at = now
        self._fresh_until = now + self._ttl_s
        self._usable_until = self._fresh_until + self._stale_grace_s
        self._next_attempt_at = float("-inf")
        return True


def load_sources() -> dict[str, SourceInfo]:
    """Read every enabled source, waiting for PostgreSQL no longer than a connection may take."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT set_config('statement_timeout', %s, true)",
                    [f"{settings.DATABASE_CONNECT_TIMEOUT_S * 1000:.0f}"],
                )
        return {
            source.key_hash: SourceInfo(
                name=source.name,
                topics=frozenset(source.topic_list()),
                max_events_per_s=source.max_events_per_s,
                max_bytes_per_s=source.max_bytes_per_s,
                every_topic=source.allows_every_topic(),
                protocol_topics=dict(source.protocol_topics or {}),
            )
            for source in Source.objects.filter(enabled=True)
        }


@per_process
def get_cache() -> KeyCache:
    """Return this process's key cache, loaded on first lookup."""
    return KeyCache(
        ttl_s=settings.INGEST_KEY_CACHE_TTL_S,
        load=load_sources,
        stale_grace_s=settings.INGEST_KEY_CACHE_STALE_GRACE_S,
        retry_s=settings.INGEST_KEY_CACHE_RETRY_S,
        # A first load waits for the database no longer than its connect timeout.
        cold_wait_s=settings.DATABASE_CONNECT_TIMEOUT_S,
        miss_reload_s=settings.INGEST_KEY_CACHE_MISS_RELOAD_S,
    )


def presented_key(meta: dict) -> str | None:
    authorization = meta.get("HTTP_AUTHORIZATION", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return meta.get("HTTP_X_API_KEY", "").strip() or None


def basic_credentials(meta: dict) -> tuple[str, str] | None:
    """Return the user name and password of an `Authorization: Basic` header, or None."""
    scheme, _, encoded = meta.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    user, _, password = decoded.partition(":")
    return user, password


def authenticate(meta: dict) -> SourceInfo:
    """Return the request's source from its key (ANONYMOUS without one, if keys are optional).

    Raises Unauthorized for a wrong key, or none where keys are required; SourcesUnavailable
    when the source table cannot be read.
    """
    return authenticate_key(
        presented_key(meta),
        missing="send an API key as 'Authorization: Bearer <key>' or X-Api-Key",
    )


def authenticate_key(key: str | None, *, missing: str = "send an API key") -> SourceInfo:
    """Return the source of a key however the request carried it (ANONYMOUS for None, if keys
    are optional); raise Unauthorized with `missing` for none where keys are required."""
    if not key:
        if settings.INGEST_REQUIRE_API_KEYS:
            raise Unauthorized(missing)
        return ANONYMOUS
    source = get_cache().lookup(hash_key(key))
    if source is None:
        raise Unauthorized("the API key is not valid")
    return source


def authorize_topic(source: SourceInfo, topic: str) -> None:
    """Refuse a topic outside the source's allowed topics (every topic for "*")."""
    if not source.every_topic and topic not in source.topics:
        raise TopicForbidden(f"source {source.name!r} may not send to topic {topic!r}")
