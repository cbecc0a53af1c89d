"""The key cache's load against PostgreSQL: a locked table makes it give up, not hang."""

import time

import psycopg
import pytest
from django.db import DatabaseError, connection

from ingest.control import keys

pytestmark = pytest.mark.integration


def test_loading_the_source_table_gives_up_when_postgresql_does_not_answer(
    transactional_db, settings
):
    settings.DATABASE_CONNECT_TIMEOUT_S = 0.3
    database = connection.settings_dict
    with psycopg.connect(
        host=database["HOST"], port=database["PORT"], user=database["USER"], dbname=database["NAME"]
    ) as locker:
        locker.execute("LOCK TABLE ingest_source IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        with pytest.raises(DatabaseError, match="statement timeout"):
            keys.load_sources()
        assert time.monotonic() - started < 3
