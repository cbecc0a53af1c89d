import json

import pytest

from ingest import keys
from ingest.errors import ApiError
from ingest.models import Source

URL = "/api/v1/events/clicks"


def post(client, body, *, url=URL, **headers):
    return client.generic(
        "POST", url, json.dumps(body).encode(), content_type="application/json", **headers
    )


@pytest.fixture
def fresh_keys(monkeypatch, settings):
    """A key cache and rate limiter of the test's own, with keys required."""
    settings.INGEST_REQUIRE_API_KEYS = True
    monkeypatch.setattr(keys, "_cache", None)
    monkeypatch.setattr(keys, "_limiter", None)


def make_source(**fields) -> tuple[Source, str]:
    source = Source(name=fields.pop("name", "shop"), **fields)
    key = keys.issue_key(source)
    source.save()
    return source, key


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


def source_info(**limits) -> keys.SourceInfo:
    return keys.SourceInfo(
        name="s",
        topics=frozenset(),
        max_events_per_s=limits.get("events"),
        max_bytes_per_s=limits.get("bytes"),
    )


def test_rate_limiter_answers_429_with_retry_after_when_the_bucket_is_empty(monkeypatch):
    clock = [50.0]
    monkeypatch.setattr(keys.time, "monotonic", lambda: clock[0])
    limiter = keys.RateLimiter(burst_s=1.0)
    source = source_info(events=10)
    for _ in range(10):
        limiter.check(source, events=1, nbytes=1)
    with pytest.raises(ApiError) as raised:
        limiter.check(source, events=1, nbytes=1)
    assert (raised.value.status, raised.value.code, raised.value.retry_after) == (
        429,
        "rate_limited",
        1,
    )
    clock[0] += 0.5  # five tokens back
    limiter.check(source, events=5, nbytes=1)
    with pytest.raises(ApiError):
        limiter.check(source, events=1, nbytes=1)


def test_rate_limiter_limits_bytes_and_says_how_long_to_wait(monkeypatch):
    clock = [50.0]
    monkeypatch.setattr(keys.time, "monotonic", lambda: clock[0])
    limiter = keys.RateLimiter(burst_s=1.0)
    source = source_info(bytes=1_000)
    limiter.check(source, events=1, nbytes=1_000)
    with pytest.raises(ApiError) as raised:
        limiter.check(source, events=1, nbytes=1)
    assert raised.value.retry_after == 1
    # A request bigger than the whole bucket passes once the bucket is full, then owes.
    clock[0] += 1
    limiter.check(source, events=1, nbytes=3_000)
    with pytest.raises(ApiError) as raised:
        limiter.check(source, events=1, nbytes=1_000)
    assert raised.value.retry_after == 3


def test_a_rejected_request_takes_no_tokens(monkeypatch):
    clock = [50.0]
    monkeypatch.setattr(keys.time, "monotonic", lambda: clock[0])
    limiter = keys.RateLimiter(burst_s=1.0)
    source = source_info(events=10, bytes=100)
    limiter.check(source, events=1, nbytes=100)
    with pytest.raises(ApiError):
        limiter.check(source, events=1, nbytes=50)  # over bytes
    clock[0] += 1
    limiter.check(source, events=9, nbytes=100)  # the events bucket lost only the first one


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
def test_over_quota_is_429_with_retry_after(client, gateway, publisher, fresh_keys):
    _, key = make_source(max_events_per_s=5)
    response = post(client, [{"n": n} for n in range(5)], HTTP_X_API_KEY=key)
    assert response.status_code == 202, response.content
    response = post(client, {"n": 6}, HTTP_X_API_KEY=key)
    assert response.status_code == 429
    assert response.json()["code"] == "rate_limited"
    assert int(response["Retry-After"]) >= 1
    assert len(publisher.records) == 5


@pytest.mark.django_db
def test_key_checks_and_rate_limits_cost_no_query_per_request(
    client, gateway, fresh_keys, django_assert_num_queries
):
    _, key = make_source(max_events_per_s=3)
    _, other_key = make_source(name="other")
    with django_assert_num_queries(1):  # the first request loads the whole source table
        assert post(client, {"n": 0}, HTTP_X_API_KEY=other_key).status_code == 202
    with django_assert_num_queries(0):
        statuses = [post(client, {"n": n}, HTTP_X_API_KEY=key).status_code for n in range(5)]
        statuses += [post(client, {"n": 1}, HTTP_X_API_KEY="wrong").status_code for _ in range(5)]
        statuses += [post(client, {"n": 1}).status_code for _ in range(5)]
    assert statuses == [202] * 3 + [429] * 2 + [401] * 10


@pytest.mark.django_db
def test_create_source_command_prints_a_working_key(client, gateway, fresh_keys):
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command(
        "create_source", "cli", "--topics", "clicks", "--max-events-per-s", "100", stdout=out
    )
    key = out.getvalue().strip()
    source = Source.objects.get(name="cli")
    assert source.key_hash == keys.hash_key(key)
    assert source.topic_list() == ["clicks"]
    assert post(client, {"n": 1}, HTTP_X_API_KEY=key).status_code == 202


@pytest.mark.django_db
def test_rotating_a_key_in_the_admin_retires_the_old_one(admin_client, client, gateway, fresh_keys):
    source, old_key = make_source()
    assert post(client, {"n": 1}, HTTP_X_API_KEY=old_key).status_code == 202
    response = admin_client.post(
        "/admin/ingest/source/",
        {"action": "rotate_keys", "_selected_action": [source.pk]},
        follow=True,
    )
    messages = [str(message) for message in response.context["messages"]]
    (new_key,) = [message.rsplit(": ", 1)[1] for message in messages if "API key" in message]
    assert post(client, {"n": 1}, HTTP_X_API_KEY=old_key).status_code == 401
    assert post(client, {"n": 1}, HTTP_X_API_KEY=new_key).status_code == 202


def test_access_log_lines_carry_the_request_id(client, gateway, settings, caplog):
    from ingest.logging import JsonFormatter

    settings.INGEST_ACCESS_LOG = True
    with caplog.at_level("INFO", logger="ingest.access"):
        client.get("/healthz", HTTP_X_REQUEST_ID="trace-7")
    (record,) = caplog.records
    assert (record.method, record.path, record.status) == ("GET", "/healthz", 200)
    assert record.request_id == "trace-7"
    assert json.loads(JsonFormatter().format(record))["request_id"] == "trace-7"
