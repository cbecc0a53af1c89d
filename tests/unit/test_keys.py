"""API keys: hashing, the key cache and how it degrades, and the key checks of a request."""

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import OperationalError, connection

from ingest.control import keys
from ingest.models import Source
from tests.unit.sources import make_source, post


def test_only_the_hash_of_a_key_is_stored(db):
    source, key = make_source()
    stored = Source.objects.get(pk=source.pk)
    assert stored.key_hash == keys.hash_key(key) != key
    assert stored.key_prefix == key[:8]
    assert key not in json.dumps([str(value) for value in vars(stored).values()])
    assert len(key) >= 40


def test_key_cache_loads_the_table_once_per_ttl(monkeypatch):
    loads = []

    def load():
        loads.append(1)
        return {"h": keys.ANONYMOUS}

    clock = [100.0]
    monkeypatch.setattr(keys.time, "monotonic", lambda: clock[0])
    cache = keys.KeyCache(ttl_s=10, load=load)
    assert cache.lookup("h") is keys.ANONYMOUS
    for _ in range(100):
        assert cache.lookup("nope") is None
    assert len(loads) == 1
    clock[0] += 11
    cache.lookup("h")
    assert len(loads) == 2
    cache.invalidate()
    cache.lookup("h")
    assert len(loads) == 3


def test_an_unknown_key_reloads_a_table_older_than_the_miss_interval(clock):
    loader = FakeLoader()
    cache = degrading_cache(loader, miss_reload_s=1)
    assert cache.lookup("new") is None
    assert loader.calls == 1  # just loaded: a miss does not reload at once
    loader.table["new"] = SHOP  # a source created a moment later
    clock[0] += 1.5
    assert cache.lookup("new") is SHOP  # known within the interval, not the 10 s TTL
    assert loader.calls == 2
    for _ in range(50):  # invented keys: at most one reload per interval
        assert cache.lookup("invented") is None
    assert loader.calls == 2
    clock[0] += 1.5
    loader.error = OperationalError("connection refused")
    assert cache.lookup("invented") is None  # a failed miss reload keeps the table
    assert cache.lookup("new") is SHOP
    assert loader.calls == 3


SHOP = keys.SourceInfo(
    name="shop", topics=frozenset(), max_events_per_s=None, max_bytes_per_s=None, every_topic=True
)


class FakeLoader:
    """Loads the source table, or raises while `error` is set; counts its calls."""

    def __init__(self):
        self.calls = 0
        self.error = None
        self.table = {"h": SHOP}
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self):
        self.calls += 1
        self.entered.set()
        assert self.gate.wait(5)
        if self.error is not None:
            raise self.error
        return dict(self.table)


@pytest.fixture
def clock(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(keys.time, "monotonic", lambda: now[0])
    return now


def degrading_cache(loader, **overrides) -> keys.KeyCache:
    options = {"ttl_s": 10, "stale_grace_s": 30, "retry_s": 1, "cold_wait_s": 5}
    return keys.KeyCache(load=loader, **{**options, **overrides})


def test_failed_reload_answers_from_the_stale_table_and_retries_once_per_interval(clock, caplog):
    loader = FakeLoader()
    cache = degrading_cache(loader)
    assert cache.lookup("h") is SHOP
    loader.error = OperationalError("connection refused")
    clock[0] += 11  # past the TTL
    with caplog.at_level("WARNING", logger="ingest.control.keys"):
        for _ in range(50):
            assert cache.lookup("h") is SHOP
        assert loader.calls == 2  # one failed reload, not one per request
        clock[0] += 1.5
        for _ in range(50):
            assert cache.lookup("h") is SHOP
    assert loader.calls == 3
    assert len(caplog.records) == 2  # a warning per failed attempt
    assert "OperationalError" in caplog.records[0].getMessage()
    loader.error = None
    clock[0] += 1.5
    loader.table = {}
    assert cache.lookup("h") is None  # reloaded: the source is gone
    assert loader.calls == 4


def test_stale_table_past_its_grace_raises_sources_unavailable(clock):
    loader = FakeLoader()
    cache = degrading_cache(loader)
    cache.lookup("h")
    loader.error = OperationalError("connection refused")
    clock[0] += 10 + 29
    assert cache.lookup("h") is SHOP
    clock[0] += 2  # 41 s old: past TTL + grace
    with pytest.raises(keys.SourcesUnavailable):
        cache.lookup("h")
    calls = loader.calls
    with pytest.raises(keys.SourcesUnavailable):
        cache.lookup("h")  # within the retry interval: no attempt, no wait
    assert loader.calls == calls
    loader.error = None
    clock[0] += 1.5
    assert cache.lookup("h") is SHOP


def test_cold_cache_that_cannot_load_raises_and_retries_once_per_interval(clock):
    loader = FakeLoader()
    loader.error = OperationalError("connection refused")
    cache = degrading_cache(loader)
    for _ in range(20):
        with pytest.raises(keys.SourcesUnavailable):
            cache.lookup("h")
    assert loader.calls == 1
    clock[0] += 1.5
    loader.error = None
    assert cache.lookup("h") is SHOP
    assert loader.calls == 2


def test_invalidate_reloads_but_keeps_the_table_usable_if_the_reload_fails(clock):
    loader = FakeLoader()
    cache = degrading_cache(loader)
    cache.lookup("h")
    loader.error = OperationalError("connection refused")
    cache.invalidate()
    assert cache.lookup("h") is SHOP
    assert loader.calls == 2


def test_a_slow_reload_holds_up_no_other_thread(clock):
    loader = FakeLoader()
    cache = degrading_cache(loader)
    cache.lookup("h")
    clock[0] += 11
    loader.gate.clear()
    loader.entered.clear()
    with ThreadPoolExecutor(max_workers=1) as pool:
        reloading = pool.submit(cache.lookup, "h")
        assert loader.entered.wait(5)
        # The reload is stuck in the database; other threads answer from the stale table.
        assert [cache.lookup("h") for _ in range(20)] == [SHOP] * 20
        assert loader.calls == 2
        loader.table = {}
        loader.gate.set()
        assert reloading.result(timeout=5) is None  # it answers from the table it loaded
    assert cache.lookup("h") is None


def test_threads_of_a_cold_cache_share_one_load(clock):
    loader = FakeLoader()
    loader.gate.clear()
    cache = degrading_cache(loader)
    with ThreadPoolExecutor(max_workers=8) as pool:
        lookups = [pool.submit(cache.lookup, "h") for _ in range(8)]
        assert loader.entered.wait(5)
        loader.gate.set()
        assert [lookup.result(timeout=5) for lookup in lookups] == [SHOP] * 8
    assert loader.calls == 1


def test_a_cold_lookup_waits_for_another_threads_load_at_most_cold_wait_s(clock):
    loader = FakeLoader()
    loader.gate.clear()
    cache = degrading_cache(loader, cold_wait_s=0.05)
    with ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(cache.lookup, "h")
        assert loader.entered.wait(5)
        with pytest.raises(keys.SourcesUnavailable, match="still loading"):
            cache.lookup("h")
        loader.gate.set()
        assert first.result(timeout=5) is SHOP
    assert loader.calls == 1


@pytest.mark.django_db
def test_keys_required_missing_or_wrong_key_is_401(client, gateway, fresh_keys):
    make_source()
    body = {"n": 1}
    response = post(client, body)
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"
    response = post(client, body, HTTP_AUTHORIZATION="Bearer not-a-key")
    assert response.status_code == 401
    response = post(client, body, HTTP_X_API_KEY="not-a-key")
    assert response.status_code == 401


@pytest.mark.django_db
def test_right_key_in_either_header_is_accepted(client, gateway, publisher, fresh_keys):
    _, key = make_source()
    assert post(client, {"n": 1}, HTTP_AUTHORIZATION=f"Bearer {key}").status_code == 202
    assert post(client, {"n": 2}, HTTP_X_API_KEY=key).status_code == 202
    assert len(publisher.records) == 2


@pytest.mark.django_db
def test_keys_optional_still_rejects_a_wrong_key(client, gateway, settings, fresh_keys):
    settings.INGEST_REQUIRE_API_KEYS = False
    make_source()
    assert post(client, {"n": 1}).status_code == 202
    assert post(client, {"n": 1}, HTTP_X_API_KEY="wrong").status_code == 401


@pytest.mark.django_db
def test_disabled_source_is_401(client, gateway, fresh_keys):
    _, key = make_source(enabled=False)
    assert post(client, {"n": 1}, HTTP_X_API_KEY=key).status_code == 401


@pytest.mark.django_db
def test_topic_outside_the_sources_list_is_403(client, gateway, fresh_keys):
    _, key = make_source(allowed_topics="orders, clicks")
    assert post(client, {"n": 1}, HTTP_X_API_KEY=key).status_code == 202
    response = post(client, {"n": 1}, url="/api/v1/events/other", HTTP_X_API_KEY=key)
    assert response.status_code == 403
    assert response.json()["code"] == "forbidden_topic"
    response = client.get("/api/v1/show/?a=1", HTTP_X_API_KEY=key)  # default topic "events"
    assert response.status_code == 403


@pytest.mark.django_db
def test_key_checks_and_rate_limits_cost_no_query_per_request(
    client, gateway, fresh_keys, django_assert_num_queries
):
    _, key = make_source(max_events_per_s=3)
    _, other_key = make_source(name="other")
    # The first request loads the whole source table: one SELECT in a transaction (a savepoint
    # inside the test's own), on PostgreSQL under a statement timeout set by one more query.
    first_load_queries = 4 if connection.vendor == "postgresql" else 3
    with django_assert_num_queries(first_load_queries):
        assert post(client, {"n": 0}, HTTP_X_API_KEY=other_key).status_code == 202
    with django_assert_num_queries(0):
        statuses = [post(client, {"n": n}, HTTP_X_API_KEY=key).status_code for n in range(5)]
        statuses += [post(client, {"n": 1}, HTTP_X_API_KEY="wrong").status_code for _ in range(5)]
        statuses += [post(client, {"n": 1}).status_code for _ in range(5)]
    assert statuses == [202] * 3 + [429] * 2 + [401] * 10


@pytest.mark.django_db
def test_cold_key_cache_without_a_database_is_503_with_retry_after(
    client, gateway, publisher, fresh_keys, settings, monkeypatch
):
    _, key = make_source()

    def unreachable():
        raise OperationalError("connection to server failed: timeout expired")

    monkeypatch.setattr(keys, "load_sources", unreachable)
    settings.INGEST_RETRY_AFTER_S = 3
    response = post(client, {"n": 1}, HTTP_X_API_KEY=key)
    assert response.status_code == 503
    assert response.json()["code"] == "unavailable"
    assert response["Retry-After"] == "3"
    assert publisher.records == []


@pytest.mark.django_db
def test_stale_key_cache_keeps_serving_while_the_database_is_down(
    client, gateway, fresh_keys, settings, monkeypatch
):
    _, key = make_source()
    settings.INGEST_KEY_CACHE_TTL_S = 0  # every request after the first one reloads
    assert post(client, {"n": 1}, HTTP_X_API_KEY=key).status_code == 202

    def unreachable():
        raise OperationalError("connection to server failed")

    monkeypatch.setattr(keys.get_cache(), "_load", unreachable)
    assert [post(client, {"n": 1}, HTTP_X_API_KEY=key).status_code for _ in range(3)] == [202] * 3
    assert post(client, {"n": 1}, HTTP_X_API_KEY="wrong").status_code == 401


def test_anonymous_requests_may_send_to_every_topic():
    keys.authorize_topic(keys.ANONYMOUS, "anything")


@pytest.mark.django_db
def test_a_source_without_topics_may_send_to_none(client, gateway, fresh_keys):
    _, key = make_source(allowed_topics="")
    response = post(client, {"n": 1}, HTTP_X_API_KEY=key)
    assert response.status_code == 403
    assert response.json()["code"] == "forbidden_topic"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Basic d3JpdGUta2V5Og==", ("write-key", "")),  # "write-key:"
        ("basic dXNlcjpwYTpzcw==", ("user", "pa:ss")),  # a password may hold a colon
        ("Basic not-base64!", None),
        ("Bearer d3JpdGUta2V5Og==", None),
        ("", None),
    ],
)
def test_basic_credentials_are_read_from_the_authorization_header(header, expected):
    assert keys.basic_credentials({"HTTP_AUTHORIZATION": header}) == expected


@pytest.mark.django_db
def test_a_key_from_anywhere_in_a_request_finds_its_source(fresh_keys):
    _, key = make_source(name="shop", protocol_topics={"segment": "web"})
    source = keys.authenticate_key(key)
    assert (source.name, source.protocol_topics) == ("shop", {"segment": "web"})
    with pytest.raises(keys.Unauthorized, match="not valid"):
        keys.authenticate_key("wrong")
    with pytest.raises(keys.Unauthorized, match="writeKey"):
        keys.authenticate_key("", missing="send your writeKey")


def test_no_key_is_anonymous_where_keys_are_optional(settings):
    settings.INGEST_REQUIRE_API_KEYS = False
    assert keys.authenticate_key(None) is keys.ANONYMOUS
