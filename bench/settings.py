"""The gateway's settings plus the comparison views of bench/urls.py; for benchmarks only."""

from ingestsite.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
