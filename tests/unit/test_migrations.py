"""Data migrations, run forwards and backwards."""

from importlib import import_module

import pytest
from django.apps import apps

from ingest.models import Source
from tests.unit.sources import make_source


@pytest.mark.django_db
def test_migration_0004_turns_empty_topic_lists_into_every_topic():
    migration = import_module("ingest.migrations.0004_source_topic_wildcard")
    make_source(name="old", allowed_topics="")
    make_source(name="spaces", allowed_topics=" , ")
    make_source(name="listed", allowed_topics="orders")
    migration.empty_topics_to_wildcard(apps, None)
    topics = dict(Source.objects.values_list("name", "allowed_topics"))
    assert topics == {"old": "*", "spaces": "*", "listed": "orders"}
    migration.wildcard_to_empty_topics(apps, None)
    assert Source.objects.get(name="old").allowed_topics == ""
