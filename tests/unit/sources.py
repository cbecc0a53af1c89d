"""Helpers of the tests that send events with API keys: a source with its key, a JSON post."""

import json

from ingest.control import keys
from ingest.models import Source

EVENTS_URL = "/api/v1/events/clicks"


def make_source(**fields) -> tuple[Source, str]:
    """Save a source (every topic unless told) and return it with its plain key."""
    fields.setdefault("allowed_topics", "*")
    source = Source(name=fields.pop("name", "shop"), **fields)
    key = keys.issue_key(source)
    source.save()
    return source, key


def post(client, body, *, url=EVENTS_URL, **headers):
    """POST `body` as JSON through the Django test client."""
    return client.generic(
        "POST", url, json.dumps(body).encode(), content_type="application/json", **headers
    )
