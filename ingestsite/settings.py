"""Django settings, read from the environment; docs/CONFIGURATION.md lists every variable."""

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from ingestsite.env import env_bool, env_float, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent

SERVICE_URL_VARIABLES = ("DATABASE_URL", "CELERY_BROKER_URL", "KAFKA_BOOTSTRAP_SERVERS")

# Standalone mode embeds everything (SQLite, a file-based Celery broker, a local Tansu);
# production mode requires every service URL and a secret key.
INGEST_MODE = env_str(
    "INGEST_MODE",
    "production" if any(env_str(name) for name in SERVICE_URL_VARIABLES) else "standalone",
)
if INGEST_MODE not in ("standalone", "production"):
    raise ImproperlyConfigured(f"INGEST_MODE must be standalone or production, got {INGEST_MODE!r}")
STANDALONE = INGEST_MODE == "standalone"

if not STANDALONE:
    missing = [
        name
        for name in (*SERVICE_URL_VARIABLES, "SECRET_KEY", "ALLOWED_HOSTS")
        if not env_str(name)
    ]
    if missing:
        raise ImproperlyConfigured(
            "Production mode needs " + ", ".join(missing) + " in the environment "
            "(unset every service URL and INGEST_MODE to run standalone)."
        )

INGEST_DATA_DIR = Path(env_str("INGEST_DATA_DIR", str(BASE_DIR / ".ingest")))

SECRET_KEY = env_str("SECRET_KEY", "standalone-insecure-key-do-not-use-in-production")
DEBUG = env_bool("DEBUG", False)
if DEBUG and not STANDALONE:
    # Django's debug pages show settings and tracebacks: the broker URL with its password.
    raise ImproperlyConfigured("DEBUG=true is refused in production mode")
# Every host is fine for a gateway tried out on one machine; production names its own.
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "*")

# --- HTTPS behind a TLS-terminating proxy (README, "Running in production") ---
# "HEADER,value", e.g. "HTTP_X_FORWARDED_PROTO,https": the header the proxy sets on HTTPS.
_proxy_ssl_header = env_list("SECURE_PROXY_SSL_HEADER")
if _proxy_ssl_header and len(_proxy_ssl_header) != 2:
    raise ImproperlyConfigured(
        "SECURE_PROXY_SSL_HEADER must be HEADER,value (e.g. HTTP_X_FORWARDED_PROTO,https)"
    )
SECURE_PROXY_SSL_HEADER = tuple(_proxy_ssl_header) or None
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", False)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
# Load-balancer probes and event clients are never redirected (paths without the leading "/").
SECURE_REDIRECT_EXEMPT = [r"^api/", r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "ingest",
]

MIDDLEWARE = [
    "ingest.control.logging.RequestContextMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# The event endpoints skip the middleware above and Django's per-request signals: they need
# no session, CSRF check or user, and the admin's chain is a large share of their CPU in Django
# (docs/BENCHMARKS.md).
INGEST_FAST_PATH = env_bool("INGEST_FAST_PATH", True)
# The native event endpoints, then the client protocols' (docs/PROTOCOLS.md): Segment's /v1/...,
# PostHog's, Snowplow's (with or without a key prefix) and Confluent REST Proxy's v2 and v3.
INGEST_FAST_PATHS = (
    (
        "/api/v1/events/",
        "/api/v1/show/",
        "/v1/",
        "/batch",
        "/capture",
        "/e",
        "/i",
        "/com.snowplowanalytics.snowplow/",
        "/snowplow/",
        "/topics/",
        "/v3/",
    )
    if INGEST_FAST_PATH
    else ()
)
INGEST_FAST_PATH_MIDDLEWARE = ["ingest.control.logging.RequestContextMiddleware"]

# Cookie storage signs a cookie on every request, API requests included; session storage is lazy.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"

ROOT_URLCONF = "ingestsite.urls"
WSGI_APPLICATION = "ingestsite.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{INGEST_DATA_DIR / 'db.sqlite3'}"),
        conn_max_age=60,
        # A kept connection the server closed (a restart, idle_session_timeout) is replaced
        # before a task or request uses it, instead of failing that task once.
        conn_health_checks=True,
    )
}
# Seconds a new PostgreSQL connection may take, and the key cache's query
# (ingest/control/keys.py): a cold process answers keyed requests 503 instead of hanging on an
# unreachable database.
DATABASE_CONNECT_TIMEOUT_S = env_int("DATABASE_CONNECT_TIMEOUT_S", 5)
if DATABASES["default"]["ENGINE"].endswith("postgresql"):
    DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = DATABASE_CONNECT_TIMEOUT_S
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # Worker threads write outcomes concurrently; WAL and immediate transactions avoid
    # "database is locked" failures that would otherwise retry a delivered batch.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL;",
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_TZ = True
STATIC_URL = "static/"

# The ingest views read and bound the body themselves (INGEST_MAX_BODY_BYTES).
DATA_UPLOAD_MAX_MEMORY_SIZE = None

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "ingest.control.logging.JsonFormatter"},
    },
    # Every 4xx and 503 already answers the client with its reason; logging each one under
    # load would cost more than the request. Unexpected 5xx still log with their traceback.
    "filters": {
        "unexpected_errors_only": {
            "()": "django.utils.log.CallbackFilter",
            "callback": lambda record: getattr(record, "status_code", 500) in (500, 502, 504),
        }
    },
    # LOG_FORMAT: json (one JSON object a line, with the request id) or plain.
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": env_str("LOG_FORMAT", "json")}
    },
    "loggers": {
        "kafka": {"level": env_str("KAFKA_LOG_LEVEL", "WARNING")},
        # Celery's two INFO lines per task ("received", "succeeded") cost a worker more CPU per
        # batch than its outcome write; retries, failures and connection changes still log.
        **dict.fromkeys(
            ("celery.worker.strategy", "celery.app.trace"),
            {"level": env_str("TASK_LOG_LEVEL", "WARNING")},
        ),
        "django.request": {
            "handlers": ["console"],
            "filters": ["unexpected_errors_only"],
            "propagate": False,
        },
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}

# --- Kafka ---
# The producer's client library (ingest/delivery/producers BACKENDS): kafka-python or
# confluent, or the dotted path of a class following ingest.delivery.producers.base.Producer
# (imported when the first batch is produced).
KAFKA_CLIENT = env_str("KAFKA_CLIENT", "kafka-python")
if KAFKA_CLIENT not in ("kafka-python", "confluent") and "." not in KAFKA_CLIENT:
    raise ImproperlyConfigured(
        "KAFKA_CLIENT must be kafka-python, confluent or the dotted path of a Producer class, "
        f"got {KAFKA_CLIENT!r}"
    )
KAFKA_BOOTSTRAP_SERVERS = env_list("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")
KAFKA_DEFAULT_TOPIC = env_str("KAFKA_DEFAULT_TOPIC", "events")
KAFKA_TOPIC_ALLOWLIST = env_list("KAFKA_TOPIC_ALLOWLIST")
# The one cluster id Confluent REST Proxy v3 clients name in their URLs (docs/PROTOCOLS.md).
KAFKA_CLUSTER_ID = env_str("KAFKA_CLUSTER_ID", "ingest-gateway")
KAFKA_TOPIC_PATTERN = env_str("KAFKA_TOPIC_PATTERN", r"[A-Za-z0-9][A-Za-z0-9._-]{0,248}")
KAFKA_COMPRESSION_TYPE = env_str("KAFKA_COMPRESSION_TYPE", "none")
KAFKA_LINGER_MS = env_int("KAFKA_LINGER_MS", 5)
# Bytes per partition in one produce request; a task's batch (up to INGEST_BATCH_MAX_BYTES)
# then takes a few requests instead of dozens of kafka-python's default 16 KiB.
KAFKA_BATCH_SIZE = env_int("KAFKA_BATCH_SIZE", 262_144)
KAFKA_REQUEST_TIMEOUT_MS = env_int("KAFKA_REQUEST_TIMEOUT_MS", 10_000)
KAFKA_MAX_BLOCK_MS = env_int("KAFKA_MAX_BLOCK_MS", 5_000)
KAFKA_DELIVERY_TIMEOUT_S = env_float("KAFKA_DELIVERY_TIMEOUT_S", 15.0)
# Largest produce request, as the brokers' message.max.bytes allows: an event whose record would
# exceed it is refused at the edge (413 event_too_large) instead of failing in a worker.
KAFKA_MAX_REQUEST_SIZE = env_int("KAFKA_MAX_REQUEST_SIZE", 1_048_576)

# --- Celery (CELERY_* names map to Celery settings through the CELERY namespace) ---
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://localhost/")
CELERY_BROKER_TRANSPORT_OPTIONS = (
    {
        "data_folder_in": str(INGEST_DATA_DIR / "broker" / "queue"),
        "data_folder_out": str(INGEST_DATA_DIR / "broker" / "queue"),
        "processed_folder": str(INGEST_DATA_DIR / "broker" / "processed"),
        "control_folder": str(INGEST_DATA_DIR / "broker" / "control"),
        "store_processed": False,
        "polling_interval": 0.1,
    }
    if CELERY_BROKER_URL.startswith("filesystem")
    else {"confirm_publish": True}
)
CELERY_BROKER_CONNECTION_TIMEOUT = env_float("CELERY_BROKER_CONNECTION_TIMEOUT", 2.0)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_HEARTBEAT = env_int("CELERY_BROKER_HEARTBEAT", 30)
CELERY_TASK_DEFAULT_QUEUE = env_str("CELERY_TASK_DEFAULT_QUEUE", "ingest")
# A classic queue lives on one RabbitMQ node; a quorum queue is replicated on a majority of the
# cluster, so a 2xx outlives that node (README, "Guarantees"). A queue keeps its type for good:
# moving to quorum takes a new queue name (docs/CONFIGURATION.md, "Moving to a quorum queue").
INGEST_QUEUE_TYPE = env_str("INGEST_QUEUE_TYPE", "classic")
if INGEST_QUEUE_TYPE not in ("classic", "quorum"):
    raise ImproperlyConfigured(
        f"INGEST_QUEUE_TYPE must be classic or quorum, got {INGEST_QUEUE_TYPE!r}"
    )
# Celery declares the default queue with x-queue-type from this, in the worker and in
# app.amqp.default_queue, which the gateway's publisher and backlog monitor declare too.
CELERY_TASK_DEFAULT_QUEUE_TYPE = INGEST_QUEUE_TYPE
# Quorum queues refuse global QoS: Celery then sets a per-consumer prefetch instead.
CELERY_WORKER_DETECT_QUORUM_QUEUES = True
# Celery's consumer without native delayed delivery, which stalls a worker after a node dies
# (celery_app/consumer.py says why).
CELERY_WORKER_CONSUMER = "celery_app.consumer:Consumer"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_TASK_IGNORE_RESULT = True
# Celery's own re-sends of a task (task.retry) stay JSON, which holds any str; the gateway
# publishes batches as INGEST_MESSAGE_FORMAT. Workers take both.
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["msgpack", "json"]
CELERY_WORKER_PREFETCH_MULTIPLIER = env_int("CELERY_WORKER_PREFETCH_MULTIPLIER", 1)
# After a broker reconnect Celery restores a reduced prefetch count with basic_qos from the pool
# thread that acks, racing the consumer on the one AMQP connection: the worker stalls until the
# broker drops it for missed heartbeats (90 s). Keep the prefetch count fixed instead.
CELERY_WORKER_ENABLE_PREFETCH_COUNT_REDUCTION = False
# Delivery threads mostly wait on Kafka's acks and the outcome write; 4 let the backlog grow
# under single-event load (docs/BENCHMARKS.md, "Defaults").
CELERY_WORKER_CONCURRENCY = env_int("CELERY_WORKER_CONCURRENCY", 16)
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Celery's Django fixup closes every database connection before and after each task unless
# this is set, and a new PostgreSQL connection (a forked backend) per batch cost the worker dearly
# (docs/BENCHMARKS.md, "Third round of changes"). The task itself drops broken or old
# connections (CONN_MAX_AGE).
CELERY_DB_REUSE_MAX = env_int("CELERY_DB_REUSE_MAX", 1_000_000)

# --- Ingest ---
INGEST_MAX_BODY_BYTES = env_int("INGEST_MAX_BODY_BYTES", 1_048_576)
INGEST_MAX_DECOMPRESSED_BYTES = env_int("INGEST_MAX_DECOMPRESSED_BYTES", 4_194_304)
INGEST_MAX_EVENTS_PER_REQUEST = env_int("INGEST_MAX_EVENTS_PER_REQUEST", 1_000)
INGEST_MAX_ID_LENGTH = env_int("INGEST_MAX_ID_LENGTH", 128)
INGEST_BATCH_MAX_EVENTS = env_int("INGEST_BATCH_MAX_EVENTS", 2_000)
INGEST_BATCH_MAX_BYTES = env_int("INGEST_BATCH_MAX_BYTES", 1_048_576)
# The next batch is taken when the previous publish is confirmed; only while the workers fall
# behind (the queue deeper than the grow depth and not shrinking, at each backlog reading) a
# window spaces the takes, doubling from the minimum up to the maximum; a queue at most the shrink
# depth halves it. Each batch costs a worker about the same CPU whatever its size, so a longer
# window means fewer, larger batches under load (docs/BENCHMARKS.md, "Why the window matters").
INGEST_BATCH_MAX_WAIT_MS = env_float("INGEST_BATCH_MAX_WAIT_MS", 50.0)
INGEST_BATCH_MIN_WAIT_MS = env_float("INGEST_BATCH_MIN_WAIT_MS", 5.0)
INGEST_BATCH_WINDOW_GROW_DEPTH = env_int("INGEST_BATCH_WINDOW_GROW_DEPTH", 20)
INGEST_BATCH_WINDOW_SHRINK_DEPTH = env_int("INGEST_BATCH_WINDOW_SHRINK_DEPTH", 2)
INGEST_FLUSHERS = env_int("INGEST_FLUSHERS", 2)
INGEST_PENDING_MAX_EVENTS = env_int("INGEST_PENDING_MAX_EVENTS", 50_000)
INGEST_PENDING_MAX_BYTES = env_int("INGEST_PENDING_MAX_BYTES", 32 * 1_048_576)
INGEST_PUBLISH_TIMEOUT_S = env_float("INGEST_PUBLISH_TIMEOUT_S", 5.0)
# Batches are MessagePack (celery_app/serialization.py); while workers of a version that takes
# only JSON still run, gateways publish JSON (docs/CONFIGURATION.md, "Upgrading to MessagePack
# task messages").
INGEST_MESSAGE_FORMAT = env_str("INGEST_MESSAGE_FORMAT", "msgpack")
if INGEST_MESSAGE_FORMAT not in ("msgpack", "json"):
    raise ImproperlyConfigured(
        f"INGEST_MESSAGE_FORMAT must be msgpack or json, got {INGEST_MESSAGE_FORMAT!r}"
    )
INGEST_DELIVERED_TIMEOUT_S = env_float("INGEST_DELIVERED_TIMEOUT_S", 10.0)
INGEST_BACKLOG_HIGH_WATER = env_int("INGEST_BACKLOG_HIGH_WATER", 2_000)
# The batch window follows these readings, so they come often enough for it to move within a
# second; each is one queue declare on a kept connection.
INGEST_BACKLOG_CHECK_INTERVAL_S = env_float("INGEST_BACKLOG_CHECK_INTERVAL_S", 0.25)
INGEST_RETRY_AFTER_S = env_int("INGEST_RETRY_AFTER_S", 1)
INGEST_DELIVERY_MAX_ATTEMPTS = env_int("INGEST_DELIVERY_MAX_ATTEMPTS", 30)
INGEST_DELIVERY_MAX_AGE_S = env_float("INGEST_DELIVERY_MAX_AGE_S", 3_600.0)
# Times a batch's task is re-run after an unexpected (non-Kafka) error before its unsettled
# records become dead letters.
INGEST_TASK_MAX_RETRIES = env_int("INGEST_TASK_MAX_RETRIES", 5)
INGEST_RECEIPT_RETENTION_S = env_float("INGEST_RECEIPT_RETENTION_S", 7 * 86_400.0)

# --- Control plane: sources and keys, stats, readiness, logs ---
# Require an API key (Authorization: Bearer <key> or X-Api-Key) on the ingest endpoints.
INGEST_REQUIRE_API_KEYS = env_bool("INGEST_REQUIRE_API_KEYS", not STANDALONE)
# Seconds a process answers key checks from its copy of the source table before reloading it.
INGEST_KEY_CACHE_TTL_S = env_float("INGEST_KEY_CACHE_TTL_S", 15.0)
# While the database cannot be read, the copy is used this long past its TTL (then 503)...
INGEST_KEY_CACHE_STALE_GRACE_S = env_float("INGEST_KEY_CACHE_STALE_GRACE_S", 300.0)
# ...and a reload is tried at most this often, by one request thread.
INGEST_KEY_CACHE_RETRY_S = env_float("INGEST_KEY_CACHE_RETRY_S", 1.0)
# An unknown key reloads a table at least this old: a new source's key works at once, and
# invented keys cost at most one query per interval and process.
INGEST_KEY_CACHE_MISS_RELOAD_S = env_float("INGEST_KEY_CACHE_MISS_RELOAD_S", 1.0)
# A source's token buckets hold this many seconds of its rate (its allowed burst).
INGEST_RATE_BURST_S = env_float("INGEST_RATE_BURST_S", 1.0)
# The dotted path of the rate limiter's class (ingest.control.ratelimit.base.RateLimiter): each
# process's own buckets, or ingest.control.ratelimit.redis.RedisRateLimiter for one budget per
# source shared by every process and host.
INGEST_RATE_LIMIT_BACKEND = env_str(
    "INGEST_RATE_LIMIT_BACKEND", "ingest.control.ratelimit.local.LocalRateLimiter"
)
# The Redis of the shared budgets (RedisRateLimiter only).
REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
# How many gateway processes share a limit, on every host together: while Redis is unreachable,
# each process allows this share of each limit, so the sum stays near the limit.
INGEST_RATE_LIMIT_PROCESSES = env_int("INGEST_RATE_LIMIT_PROCESSES", 1)
if INGEST_RATE_LIMIT_PROCESSES < 1:
    raise ImproperlyConfigured(
        f"INGEST_RATE_LIMIT_PROCESSES must be at least 1, got {INGEST_RATE_LIMIT_PROCESSES}"
    )
# How long a lease from Redis may take before the process falls back to its share.
INGEST_RATE_LIMIT_REDIS_TIMEOUT_S = env_float("INGEST_RATE_LIMIT_REDIS_TIMEOUT_S", 0.1)
# The prefix of the buckets' Redis keys, so gateways of several deployments can share a Redis.
INGEST_RATE_LIMIT_KEY_PREFIX = env_str("INGEST_RATE_LIMIT_KEY_PREFIX", "ingest:ratelimit:")
# Count events per minute, topic and source in memory and add them to the database this often.
INGEST_STATS_ENABLED = env_bool("INGEST_STATS_ENABLED", True)
INGEST_STATS_FLUSH_INTERVAL_S = env_float("INGEST_STATS_FLUSH_INTERVAL_S", 2.0)
INGEST_STATS_RETENTION_DAYS = env_int("INGEST_STATS_RETENTION_DAYS", 7)
INGEST_READYZ_TIMEOUT_S = env_float("INGEST_READYZ_TIMEOUT_S", 2.0)
INGEST_READYZ_CACHE_S = env_float("INGEST_READYZ_CACHE_S", 1.0)
# Log every request (method, path, status, duration) as a line of its own.
INGEST_ACCESS_LOG = env_bool("INGEST_ACCESS_LOG", False)
