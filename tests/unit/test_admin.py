"""The admin: read-only dead letters and outcomes with replay and purge, sources, the stats page."""

import time
from datetime import UTC, datetime

import pytest

from ingest import admin as ingest_admin
from ingest.control import dead_letters as dead_letter_replay
from ingest.control import keys, stats
from ingest.models import DeadLetter, DeliveryOutcome, Source
from ingest.records import BatchRecord
from tests.unit.sources import make_source, post

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/ingest/deadletter/"


@pytest.fixture
def dead_letters():
    return [
        DeadLetter.objects.create(
            batch_id="b1",
            topic="orders",
            reason=f"UnicodeEncodeError in the key: bad {n}",
            event_ids=[f"e{n}"],
            records=[[f"e{n}", None, "{}"]],
        )
        for n in range(2)
    ]


def test_dead_letters_cannot_be_added_or_edited(admin_client, dead_letters):
    assert admin_client.get(CHANGELIST + "add/").status_code == 403
    page = admin_client.get(f"{CHANGELIST}{dead_letters[0].pk}/change/")
    assert page.status_code == 200
    assert b'name="_save"' not in page.content
    response = admin_client.post(f"{CHANGELIST}{dead_letters[0].pk}/change/", {"reason": "x"})
    assert response.status_code == 403
    assert DeadLetter.objects.get(pk=dead_letters[0].pk).reason.endswith("bad 0")


def test_dead_letters_list_one_event_each(admin_client, dead_letters):
    page = admin_client.get(CHANGELIST).content.decode()
    assert '<td class="field-event_id">e0</td>' in page
    assert "UnicodeEncodeError in the key: bad 1" in page


def test_a_dead_letter_is_replayed_on_its_own(admin_client, dead_letters, monkeypatch):
    published = []
    monkeypatch.setattr(
        dead_letter_replay, "enqueue_records", lambda *, records: published.append(records)
    )
    response = admin_client.post(
        CHANGELIST, {"action": "replay", "_selected_action": [dead_letters[1].pk]}
    )
    assert response.status_code == 302
    assert published == [[BatchRecord("orders", "e1", None, "{}")]]
    assert DeadLetter.objects.get(pk=dead_letters[1].pk).replayed_at is not None
    assert DeadLetter.objects.get(pk=dead_letters[0].pk).replayed_at is None


def test_purge_deletes_the_selected_dead_letters(admin_client, dead_letters):
    response = admin_client.post(
        CHANGELIST, {"action": "purge", "_selected_action": [dead_letters[0].pk]}
    )
    assert response.status_code == 302
    assert list(DeadLetter.objects.values_list("event_ids", flat=True)) == [["e1"]]


def test_outcomes_cannot_be_added_or_edited(admin_client):
    outcome = DeliveryOutcome.objects.create(
        batch_id="b1",
        status=DeliveryOutcome.Status.PARTIALLY_DELIVERED,
        offsets=[[0, 1], None],
        failures={"1": "too large"},
        reason="too large",
        accepted_at=datetime.fromtimestamp(time.time(), tz=UTC),
    )
    assert admin_client.get("/admin/ingest/deliveryoutcome/add/").status_code == 403
    page = admin_client.get(f"/admin/ingest/deliveryoutcome/{outcome.pk}/change/")
    assert page.status_code == 200
    assert b'name="_save"' not in page.content
    assert b"partially_delivered" in admin_client.get("/admin/ingest/deliveryoutcome/").content


def test_admin_stats_page_draws_the_chart_and_the_backlog(admin_client, count_a_run, monkeypatch):
    count_a_run(at=time.time() - 120)
    monkeypatch.setattr(ingest_admin, "queue_depth", lambda: 17)
    response = admin_client.get("/admin/ingest/eventstat/")
    assert response.status_code == 200
    page = response.content.decode()
    assert page.count('class="point point-accepted"') == 1
    assert 'data-value="10"' in page
    assert '<td id="backlog-depth">17</td>' in page
    assert '<th id="total-accepted">10</th>' in page
    assert "<script" not in page.split('id="chart"')[1].split("</div>")[0]
    assert admin_client.get("/admin/ingest/eventstat/?range=day").status_code == 200


def test_admin_source_creation_shows_the_key_once(admin_client):
    response = admin_client.post(
        "/admin/ingest/source/add/",
        {"name": "web", "allowed_topics": "clicks", "enabled": "on"},
        follow=True,
    )
    assert response.status_code == 200
    messages = [str(message) for message in response.context["messages"]]
    (message,) = [message for message in messages if "API key" in message]
    key = message.rsplit(": ", 1)[1]
    assert Source.objects.get(name="web").key_hash == keys.hash_key(key)
    listing = admin_client.get("/admin/ingest/source/").content.decode()
    assert key not in listing and key[:8] in listing


def test_dead_letters_list_their_reason_and_a_payload_preview(admin_client):
    DeadLetter.objects.create(
        batch_id="b1",
        topic="orders",
        reason="MessageSizeTooLargeError: too big",
        event_ids=["e1"],
        records=[["e1", None, '{"id":"e1","sku":"' + "x" * 300 + '"}']],
    )
    page = admin_client.get("/admin/ingest/deadletter/").content.decode()
    assert "MessageSizeTooLargeError: too big" in page
    assert "{&quot;id&quot;:&quot;e1&quot;,&quot;sku&quot;:&quot;xxx" in page
    assert "x" * 200 not in page
    assert 'value="replay"' in page and 'value="purge"' in page


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


def test_admin_stats_page_breaks_counts_down_by_protocol_and_source(admin_client, recorder):
    stats.count_accepted(topic="web", source="shop", protocol="segment", events=7, nbytes=70)
    stats.count_accepted(topic="web", source="", protocol="native", events=2, nbytes=20)
    stats.count_rejected(topic="web", source="shop", protocol="segment", code="rate_limited")
    stats.count_delivered(
        records=[BatchRecord("web", "a", None, "{}", "shop", "segment")] * 6,
        accepted_at=time.time(),
    )
    recorder.flush()
    page = admin_client.get("/admin/ingest/eventstat/").content.decode()
    segment_row = page.split('data-protocol="segment" data-source="shop"')[1].split("</tr>")[0]
    assert '<td class="accepted">7</td>' in segment_row
    assert '<td class="rejected">1</td>' in segment_row
    assert '<td class="delivered">6</td>' in segment_row
    native_row = page.split('data-protocol="native" data-source="(anonymous)"')[1].split("</tr>")[0]
    assert '<td class="accepted">2</td>' in native_row


def test_a_binary_dead_letter_is_previewed_as_hex_and_replayed_as_its_bytes(
    admin_client, monkeypatch
):
    DeadLetter.objects.create(
        batch_id="b9",
        topic="raw",
        reason="MessageSizeTooLargeError",
        event_ids=["e9"],
        records=[["e9", {"base64": "AAE="}, {"base64": "/wA="}, "shop", "confluent"]],
    )
    assert b"&lt;2 bytes&gt; ff00" in admin_client.get(CHANGELIST).content
    replayed = []
    monkeypatch.setattr(
        dead_letter_replay, "enqueue_records", lambda *, records: replayed.extend(records)
    )
    dead_letter_replay.replay_dead_letters(dead_letters=DeadLetter.objects.all())
    assert replayed == [BatchRecord("raw", "e9", b"\x00\x01", b"\xff\x00", "shop", "confluent")]
