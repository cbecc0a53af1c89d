import hashlib
import hmac
import json
from types import SimpleNamespace

import pytest
from django.utils import timezone

from ingest.control import keys, receipts
from ingest.control.receipts import DeadLettered, Delivered, Receipt, ReceiptNotFound
from ingest.ids import uuid7
from ingest.models import DeliveryOutcome, Source

BATCH_ID = "01a22113-c010-7d8c-a1ee-075ced08e457"


def signed(first=0, count=1, *, source="", batch_id=BATCH_ID) -> str:
    return Receipt(batch_id=batch_id, first=first, count=count).signed_id(source=source)


def outcome(*, offsets, failures=None, status="delivered", reason="", attempts=1):
    """A DeliveryOutcome as the worker writes it (contracts.md item 2), without the database."""
    return SimpleNamespace(
        status=status, offsets=offsets, failures=failures or {}, reason=reason, attempts=attempts
    )


def test_signature_is_hmac_sha256_of_the_slice_and_the_source_name(settings):
    settings.SECRET_KEY = "receipt-test-key"
    expected = hmac.new(
        b"receipt-test-key", f"{BATCH_ID}.3.2.shop".encode(), hashlib.sha256
    ).hexdigest()[:16]
    assert signed(3, 2, source="shop") == f"{BATCH_ID}.3.2.{expected}"
    assert receipts.parse(f"{BATCH_ID}.3.2.{expected}", source="shop") == Receipt(BATCH_ID, 3, 2)


def test_an_issued_id_parses_back_for_its_source():
    batch_id = uuid7()
    receipt_id = signed(999_999, 999_999, source="shop", batch_id=batch_id)
    assert receipts.parse(receipt_id, source="shop") == Receipt(batch_id, 999_999, 999_999)


@pytest.mark.parametrize(
    "receipt_id",
    [
        "",
        "whatever",
        "a.b.c",
        "²",
        "5" * 5_000,
        f"{BATCH_ID}.0.1",  # unsigned, as before this change
        f"{BATCH_ID}.0.1.{'0' * 16}.extra",
        f"{BATCH_ID.upper()}.0.1.{'0' * 16}",
        f"{BATCH_ID.replace('-7d8c-', '-4d8c-')}.0.1.{'0' * 16}",  # a UUIDv4
        f"{BATCH_ID.replace('-a1ee-', '-c1ee-')}.0.1.{'0' * 16}",  # wrong variant
        f"{BATCH_ID.replace('-', '')}.0.1.{'0' * 16}",
        f"{BATCH_ID}.².1.{'0' * 16}",
        f"{BATCH_ID}.0.١.{'0' * 16}",  # an Arabic-Indic digit one
        f"{BATCH_ID}.00.1.{'0' * 16}",  # not canonical
        f"{BATCH_ID}.0.01.{'0' * 16}",
        f"{BATCH_ID}.0.0.{'0' * 16}",  # count must be at least 1
        f"{BATCH_ID}.-1.1.{'0' * 16}",
        f"{BATCH_ID}.1000000.1.{'0' * 16}",  # 7 digits
        f"{BATCH_ID}.0.1000000.{'0' * 16}",
        f"{BATCH_ID}.0.1.{'0' * 15}",
        f"{BATCH_ID}.0.1.{'0' * 17}",
        f"{BATCH_ID}.0.1.{'A' * 16}",
        f"{BATCH_ID}.0.1.{'0' * 16}\n",
        f" {BATCH_ID}.0.1.{'0' * 16}",
    ],
)
def test_malformed_ids_are_not_found(receipt_id):
    with pytest.raises(ReceiptNotFound):
        receipts.parse(receipt_id, source="")


def test_the_well_formed_ids_of_that_table_parse_once_signed():
    # The table above fails on its form, not only on the signature: this one passes.
    assert receipts.parse(signed(0, 1), source="") == Receipt(BATCH_ID, 0, 1)


def test_a_wrong_or_foreign_signature_is_not_found():
    receipt_id = signed(0, 2, source="shop")
    with pytest.raises(ReceiptNotFound):
        receipts.parse(receipt_id, source="other")
    with pytest.raises(ReceiptNotFound):
        receipts.parse(receipt_id, source="")
    batch_id, first, count, signature = receipt_id.split(".")
    with pytest.raises(ReceiptNotFound):  # another slice under the same signature
        receipts.parse(f"{batch_id}.{first}.3.{signature}", source="shop")
    flipped = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    with pytest.raises(ReceiptNotFound):
        receipts.parse(f"{batch_id}.{first}.{count}.{flipped}", source="shop")


def test_a_new_secret_key_retires_old_receipts(settings):
    receipt_id = signed(0, 1)
    settings.SECRET_KEY = "rotated"
    with pytest.raises(ReceiptNotFound):
        receipts.parse(receipt_id, source="")


def test_events_of_a_delivered_slice():
    row = outcome(offsets=[[0, 5], [1, 9], [2, 2]])
    events = receipts.event_outcomes(row, receipt=Receipt(BATCH_ID, 1, 2))
    assert events == [Delivered(1, 9), Delivered(2, 2)]
    assert receipts.describe(events) == {
        "status": "delivered",
        "offsets": [{"partition": 1, "offset": 9}, {"partition": 2, "offset": 2}],
    }


def test_a_slice_reads_only_its_own_records_of_a_partly_delivered_batch():
    row = outcome(
        status="partially_delivered",
        offsets=[[0, 5], None, [0, 6], None],
        failures={"1": "MessageSizeTooLargeError", "3": "UnicodeEncodeError"},
    )
    assert receipts.describe(receipts.event_outcomes(row, receipt=Receipt(BATCH_ID, 0, 1))) == {
        "status": "delivered",
        "offsets": [{"partition": 0, "offset": 5}],
    }
    events = receipts.event_outcomes(row, receipt=Receipt(BATCH_ID, 1, 3))
    assert events == [
        DeadLettered("MessageSizeTooLargeError"),
        Delivered(0, 6),
        DeadLettered("UnicodeEncodeError"),
    ]
    assert receipts.describe(events) == {
        "status": "partially_delivered",
        "events": [
            {"dead_lettered": "MessageSizeTooLargeError"},
            {"partition": 0, "offset": 6},
            {"dead_lettered": "UnicodeEncodeError"},
        ],
    }
    events = receipts.event_outcomes(row, receipt=Receipt(BATCH_ID, 3, 1))
    assert receipts.describe(events) == {"status": "dead_lettered", "reason": "UnicodeEncodeError"}


def test_a_dead_lettered_slice_names_each_distinct_reason_once():
    row = outcome(
        status="dead_lettered",
        offsets=[None, None, None],
        failures={"0": "TooLarge", "1": "BadKey", "2": "TooLarge"},
    )
    events = receipts.event_outcomes(row, receipt=Receipt(BATCH_ID, 0, 3))
    assert receipts.describe(events) == {"status": "dead_lettered", "reason": "TooLarge; BadKey"}


def test_an_old_whole_batch_dead_letter_reads_as_every_event_failed():
    row = outcome(status="dead_lettered", offsets=[], reason="KafkaTimeoutError")
    events = receipts.event_outcomes(row, receipt=Receipt(BATCH_ID, 4, 2))
    assert events == [DeadLettered("KafkaTimeoutError")] * 2
    assert receipts.describe(events) == {"status": "dead_lettered", "reason": "KafkaTimeoutError"}


# --- the receipt endpoint and the `delivered` ack level ---


def post(client, body, *, url="/api/v1/events/clicks", **headers):
    return client.generic(
        "POST", url, json.dumps(body).encode(), content_type="application/json", **headers
    )


def assert_not_found(response):
    assert response.status_code == 404, response.content
    assert response.json()["code"] == "not_found"


@pytest.mark.django_db
def test_receipt_reports_delivered_offsets_for_its_own_events(client, gateway):
    response = post(client, [{"id": "a"}, {"id": "b"}])
    receipt_id = response.json()["receipt"]
    assert client.get(f"/api/v1/receipts/{receipt_id}").json()["status"] == "pending"
    batch_id = receipt_id.split(".")[0]
    DeliveryOutcome.objects.create(
        batch_id=batch_id,
        status="delivered",
        offsets=[[0, 5], [1, 9], [2, 2]],
        accepted_at=timezone.now(),
    )
    body = client.get(f"/api/v1/receipts/{signed(1, 2, batch_id=batch_id)}").json()
    assert body["status"] == "delivered"
    assert body["offsets"] == [{"partition": 1, "offset": 9}, {"partition": 2, "offset": 2}]


@pytest.mark.django_db
def test_receipt_of_a_dead_letter_gives_the_reason(client):
    DeliveryOutcome.objects.create(
        batch_id=BATCH_ID,
        status="dead_lettered",
        reason="MessageSizeTooLargeError",
        accepted_at=timezone.now(),
    )
    body = client.get(f"/api/v1/receipts/{signed(0, 1)}").json()
    assert body["status"] == "dead_lettered"
    assert body["reason"] == "MessageSizeTooLargeError"


@pytest.mark.django_db
def test_receipt_without_an_outcome_past_the_retention_is_unknown(client, settings):
    settings.INGEST_RECEIPT_RETENTION_S = 0
    body = client.get(f"/api/v1/receipts/{signed(0, 1, batch_id=uuid7())}").json()
    assert body["status"] == "unknown"


@pytest.mark.parametrize(
    "receipt_id", ["whatever", "a.b.c", "%C2%B2", "5" * 5_000, f"{BATCH_ID}.0.1"]
)
def test_malformed_receipt_is_a_json_404(client, receipt_id):
    assert_not_found(client.get(f"/api/v1/receipts/{receipt_id}"))


def make_source(name: str) -> str:
    source = Source(name=name, allowed_topics="*")
    key = keys.issue_key(source)
    source.save()
    return key


@pytest.mark.django_db
def test_with_keys_required_a_receipt_shows_only_the_asking_sources_events(
    client, gateway, settings
):
    settings.INGEST_REQUIRE_API_KEYS = True  # forgets the key cache (ingest.state)
    shop, other = make_source("shop"), make_source("other")
    receipt_id = post(client, {"n": 1}, HTTP_X_API_KEY=shop).json()["receipt"]
    url = f"/api/v1/receipts/{receipt_id}"
    assert client.get(url, HTTP_X_API_KEY=shop).json()["status"] == "pending"
    assert client.get(url).status_code == 401
    assert client.get(url, HTTP_X_API_KEY="wrong").status_code == 401
    assert_not_found(client.get(url, HTTP_X_API_KEY=other))
    # The other source cannot name the shop's slice with a receipt signed for itself either.
    batch_id = receipt_id.split(".")[0]
    foreign = signed(0, 1, source="other", batch_id=batch_id)
    assert client.get(f"/api/v1/receipts/{foreign}", HTTP_X_API_KEY=other).status_code == 200
    assert_not_found(client.get(f"/api/v1/receipts/{foreign}", HTTP_X_API_KEY=shop))


def test_ack_delivered_reads_a_partly_delivered_batch_per_event(client, gateway, monkeypatch):
    def wait(batch_id, *, timeout):
        return outcome(
            status="partially_delivered",
            offsets=[[3, 10], None],
            failures={"1": "MessageSizeTooLargeError"},
        )

    monkeypatch.setattr(gateway.outcomes, "wait", wait)
    response = post(client, [{"id": "a"}, {"id": "b"}], HTTP_X_INGEST_ACK="delivered")
    assert response.status_code == 202
    body = response.json()
    assert body["ack"] == "partially_delivered"
    assert body["offsets"] == [
        {"id": "a", "partition": 3, "offset": 10},
        {"id": "b", "dead_lettered": "MessageSizeTooLargeError"},
    ]


def test_ack_delivered_of_a_dead_lettered_batch_gives_each_reason(client, gateway, monkeypatch):
    def wait(batch_id, *, timeout):
        return outcome(status="dead_lettered", offsets=[], reason="KafkaTimeoutError")

    monkeypatch.setattr(gateway.outcomes, "wait", wait)
    body = post(client, [{"id": "a"}], HTTP_X_INGEST_ACK="delivered").json()
    assert body["ack"] == "dead_lettered"
    assert body["offsets"] == [{"id": "a", "dead_lettered": "KafkaTimeoutError"}]
