"""Start what standalone mode embeds, and print the configuration a server runs with."""

import argparse
import os
from contextlib import ExitStack

from django.conf import settings
from django.core.management import call_command

from ingestsite import embedded
from ingestsite.server.options import OPTIONS


def start_embedded_services(args: argparse.Namespace, stack: ExitStack) -> None:
    """In standalone mode, migrate SQLite and start what no environment variable points at."""
    data_dir = settings.INGEST_DATA_DIR
    data_dir.mkdir(parents=True, exist_ok=True)
    for folder in ("data_folder_in", "processed_folder", "control_folder"):
        if folder in settings.CELERY_BROKER_TRANSPORT_OPTIONS:
            os.makedirs(settings.CELERY_BROKER_TRANSPORT_OPTIONS[folder], exist_ok=True)
    if "DATABASE_URL" not in os.environ:
        call_command("migrate", interactive=False, verbosity=0)
        print(f"  database : SQLite at {settings.DATABASES['default']['NAME']} (migrated)")
    if "KAFKA_BOOTSTRAP_SERVERS" not in os.environ:
        address = settings.KAFKA_BOOTSTRAP_SERVERS[0]
        host, port = address.rsplit(":", 1)
        if embedded.is_listening(host, int(port)):
            print(f"  kafka    : reusing the broker already listening on {address}")
        else:
            tansu = embedded.start_tansu(address, log_path=data_dir / "tansu.log")
            stack.callback(embedded.stop_process, tansu, timeout=5)
            print(f"  kafka    : embedded Tansu (memory storage) on {address}, pid {tansu.pid}")
    if "CELERY_BROKER_URL" not in os.environ:
        worker = embedded.start_worker(
            concurrency=args.worker_threads, log_path=data_dir / "worker.log"
        )
        stack.callback(embedded.stop_process, worker, timeout=args.shutdown_timeout + 5)
        print(
            f"  celery   : filesystem broker in {data_dir / 'broker'}, embedded worker "
            f"({args.worker_threads} threads) pid {worker.pid}, log {data_dir / 'worker.log'}"
        )
    print(
        "  Standalone mode is for trying the gateway out. For production set DATABASE_URL, "
        "CELERY_BROKER_URL, KAFKA_BOOTSTRAP_SERVERS, SECRET_KEY and ALLOWED_HOSTS (see README.md)."
    )


def print_configuration(args: argparse.Namespace, stack: ExitStack) -> None:
    """Start what standalone mode embeds, then print the effective configuration."""
    if settings.STANDALONE:
        start_embedded_services(args, stack)
    else:
        kafka = ",".join(settings.KAFKA_BOOTSTRAP_SERVERS)
        print(f"  kafka    : {kafka} (producer client {settings.KAFKA_CLIENT})")
        print(f"  celery   : {settings.CELERY_BROKER_URL.split('@')[-1]}")
    for option in OPTIONS:
        print(f"  {option.flag:26} {getattr(args, option.dest)!s:16} [{option.env}]")
