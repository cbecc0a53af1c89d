"""The dead letter and outcome admins: read-only, with replay and purge actions."""

import time
from datetime import UTC, datetime

import pytest

from ingest.control import dead_letters as dead_letter_replay
from ingest.models import DeadLetter, DeliveryOutcome
from ingest.records import BatchRecord

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
