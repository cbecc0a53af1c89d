"""What the REST Proxy answers once records are accepted: v2 offsets, v3 delivery reports,
and the one cluster v3 lists."""

import json

from ....pipeline.accept import Acceptance
from .errors import KAFKA_ERROR, v3_error_code
from .records import V3Record


def pending_note(receipt_id: str) -> str:
    """Say honestly what a record Kafka had not acknowledged in time has become."""
    return (
        "accepted and durable, but Kafka had not acknowledged it yet: it will be delivered"
        f" (or dead-lettered); do not send it again. Receipt {receipt_id}"
    )


def v2_answer(acceptance: Acceptance) -> dict:
    """Return v2's produce answer: one offsets entry per record, in order."""
    if acceptance.offsets is None:  # the wait for Kafka timed out; every record is durable
        note = pending_note(acceptance.receipt_id)
        offsets = [_v2_entry(None, None, error=note) for _ in acceptance.ids]
    else:
        offsets = [_v2_offset(outcome) for outcome in acceptance.offsets]
    return {"offsets": offsets, "key_schema_id": None, "value_schema_id": None}


def _v2_offset(outcome: dict) -> dict:
    if "dead_lettered" in outcome:
        return _v2_entry(
            None, None, error_code=KAFKA_ERROR, error=f"dead-lettered: {outcome['dead_lettered']}"
        )
    return _v2_entry(outcome["partition"], outcome["offset"])


def _v2_entry(partition, offset, *, error_code: int | None = None, error: str | None = None):
    return {"partition": partition, "offset": offset, "error_code": error_code, "error": error}


def v3_reports(
    records: list[V3Record], acceptance: Acceptance | None, *, cluster_id: str, topic: str
) -> list[dict]:
    """Return one delivery report per record, in the order the records came."""
    accepted = sum(record.refusal is None for record in records)
    if acceptance is None or acceptance.offsets is None:
        outcomes = iter([None] * accepted)
    else:
        outcomes = iter(acceptance.offsets)  # one per accepted record, in order
    reports = []
    for record in records:
        if record.refusal is not None:
            refusal = record.refusal
            reports.append({"error_code": v3_error_code(refusal), "message": refusal.message})
            continue
        outcome = next(outcomes)
        if outcome is not None and "dead_lettered" in outcome:
            reports.append(
                {"error_code": KAFKA_ERROR, "message": f"dead-lettered: {outcome['dead_lettered']}"}
            )
            continue
        report = {
            "error_code": 200,
            "cluster_id": cluster_id,
            "topic_name": topic,
            "partition_id": None if outcome is None else outcome["partition"],
            "offset": None if outcome is None else outcome["offset"],
            "timestamp": None,  # set by the worker's producer, which the gateway does not hear
            "key": record.key,
            "value": record.value,
        }
        if outcome is None:
            report["message"] = pending_note(acceptance.receipt_id)
        reports.append(report)
    return reports


def concatenated(reports: list[dict]) -> bytes:
    """Return reports as the v3 stream answers them: JSON objects one after another."""
    return b"".join(json.dumps(report, separators=(",", ":")).encode() for report in reports)


def cluster(*, base_url: str, cluster_id: str) -> dict:
    """Describe the one Kafka cluster behind the gateway as v3's KafkaCluster."""
    url = f"{base_url}/v3/clusters/{cluster_id}"
    related = {
        name: {"related": f"{url}/{path}"}
        for name, path in (
            ("acls", "acls"),
            ("brokers", "brokers"),
            ("broker_configs", "broker-configs"),
            ("consumer_groups", "consumer-groups"),
            ("topics", "topics"),
            ("partition_reassignments", "topics/-/partitions/-/reassignment"),
        )
    }
    return {
        "kind": "KafkaCluster",
        "metadata": {"self": url, "resource_name": f"crn:///kafka={cluster_id}"},
        "cluster_id": cluster_id,
        "controller": None,
        **related,
    }


def cluster_list(*, base_url: str, cluster_id: str) -> dict:
    """List the one cluster as v3's KafkaClusterList."""
    return {
        "kind": "KafkaClusterList",
        "metadata": {"self": f"{base_url}/v3/clusters", "next": None},
        "data": [cluster(base_url=base_url, cluster_id=cluster_id)],
    }
