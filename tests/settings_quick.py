"""Quick-tier settings: SQLite in a temporary directory and no service to talk to.

`make test-quick` selects them. Production mode keeps the settings' checks in force; the
broker and Kafka addresses point at a closed port, so a test that reaches for a service fails
at once instead of passing by accident. Tests that need a real service are marked integration.
"""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

DATA_DIR = Path(tempfile.mkdtemp(prefix="ingest-quick-"))
atexit.register(shutil.rmtree, DATA_DIR, ignore_errors=True)
# Port 9 (discard) has no listener here: connecting to it is refused at once.
CLOSED_PORT = 9

# Assigned, not defaulted: the quick tier never uses the environment's services.
os.environ.update(
    {
        "INGEST_MODE": "production",
        "INGEST_DATA_DIR": str(DATA_DIR),
        "DATABASE_URL": f"sqlite:///{DATA_DIR / 'db.sqlite3'}",
        "CELERY_BROKER_URL": f"amqp://guest:guest@127.0.0.1:{CLOSED_PORT}//",
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{CLOSED_PORT}",
    }
)

from tests.settings import *  # noqa: E402,F403

# pytest-django's default SQLite test database lives in memory, where the threads of a test
# (flushers, worker pool) would each see their own; a file is shared by all of them.
# A copy, not tests.settings' own dict: a process that imported both keeps the full tier's.
DATABASES = {  # noqa: F405
    **DATABASES,  # noqa: F405
    "default": {**DATABASES["default"], "TEST": {"NAME": str(DATA_DIR / "test.sqlite3")}},  # noqa: F405
}
