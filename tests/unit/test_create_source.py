"""The create_source management command."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from ingest.control import keys
from ingest.models import Source
from tests.unit.sources import post


@pytest.mark.django_db
def test_create_source_command_prints_a_working_key(client, gateway, fresh_keys):
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
def test_create_source_needs_topics_and_star_allows_every_topic(client, gateway, fresh_keys):
    with pytest.raises(CommandError, match="--topics"):
        call_command("create_source", "cli", stdout=StringIO())
    with pytest.raises(CommandError, match="names no topic"):
        call_command("create_source", "cli", "--topics", " , ", stdout=StringIO())
    assert not Source.objects.filter(name="cli").exists()
    out = StringIO()
    call_command("create_source", "cli", "--topics", "*", stdout=out)
    key = out.getvalue().strip()
    assert post(client, {"n": 1}, HTTP_X_API_KEY=key).status_code == 202
    assert post(client, {"n": 1}, url="/api/v1/events/other", HTTP_X_API_KEY=key).status_code == 202


@pytest.mark.django_db
def test_create_source_sets_a_topic_per_protocol():
    call_command(
        "create_source",
        "web",
        "--topics",
        "site,app",
        "--protocol-topic",
        "segment=site",
        "--protocol-topic=snowplow=app",
        stdout=StringIO(),
    )
    assert Source.objects.get(name="web").protocol_topics == {"segment": "site", "snowplow": "app"}
    with pytest.raises(CommandError, match="PROTOCOL=TOPIC"):
        call_command(
            "create_source",
            "bad",
            "--topics",
            "a",
            "--protocol-topic",
            "segment",
            stdout=StringIO(),
        )
