"""Settings for the paper-trading platform, read from the environment.

With nothing set it runs embedded: SQLite, in-memory channel layer, no Redis.
DATABASE_URL switches to PostgreSQL; REDIS_URL switches Dramatiq and Channels to Redis.
"""
import os
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# A .env file is optional; values in the real environment win.
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# The development default: anyone can read it here, so sessions, CSRF tokens and password
# reset links signed with it can be forged. `manage.py serve` warns loudly while SECRET_KEY is
# this; set SECRET_KEY in the environment or .env for anything but a local demo.
DEV_SECRET_KEY = "dev-only-insecure-key-change-me"
SECRET_KEY = env.str("SECRET_KEY", default=DEV_SECRET_KEY)
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])

# The subsystems the kill switch stops, each with its one halt handler (risk/registry.py). Bots
# trade only through their paper sessions, so sessions are the one thing there is to stop.
RISK_HALT_HANDLERS = {"paper": "paper.sessions.sessions_halt"}

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_dramatiq",
    "django_htmx",
    "paper",
    "bots",
    "risk",
    "ledger",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Serves /static/ from the app server itself (vendored htmx, charts, CSS): no CDN, no extra web server.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, so it sees what views raise: a database or Redis outage is a 503 with the reason.
    "config.middleware.DependencyUnavailableMiddleware",
]

# A refused HTMX POST says why in the dashboard's error fragment (any other request: Django's page).
CSRF_FAILURE_VIEW = "paper.views.csrf_failure"

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
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

# --- Database -------------------------------------------------------------
# Embedded default: SQLite next to manage.py. DATABASE_URL=postgres://... for services mode.
DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the dashboard read while a session writes.
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"].setdefault(
        "init_command", "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
    )
    DATABASES["default"]["OPTIONS"].setdefault("timeout", 20)
    # BEGIN IMMEDIATE: a transaction takes the write lock up front and waits its turn (busy
    # timeout). A deferred one that reads, then writes after another connection wrote, fails
    # at once with "database is locked" - a 500 when the API and a session thread meet.
    DATABASES["default"]["OPTIONS"].setdefault("transaction_mode", "IMMEDIATE")
    # Tests use a file (WAL, busy timeout) rather than the in-memory shared-cache database,
    # whose table locks fail at once when a session thread and the test thread both write.
    # One file per test process, so two test runs in one checkout never flush each other's.
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / f".test-db-{os.getpid()}.sqlite3")}
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # psycopg 3's pool, shared by a process's threads: a worker runs one long session per
    # thread and returns its connection after each bar, so 100 sessions need ~10 connections.
    pool_max = env.int("DATABASE_POOL_MAX", default=16)
    if pool_max > 0:
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            # Short: while PostgreSQL is down, a request waits this long for a connection
            # before it answers 503, and a session retries.
            "min_size": 1, "max_size": pool_max, "timeout": env.float("DATABASE_POOL_TIMEOUT", default=5.0),
        }
        DATABASES["default"]["CONN_MAX_AGE"] = 0
        # The pool checks a connection before handing it out, so the first request after a
        # PostgreSQL restart gets a fresh connection rather than a dead one: Django's backend
        # with the pool's check done without a round trip unless the server has said something
        # (config/postgres.py, config/pgbackend).
        DATABASES["default"]["ENGINE"] = "config.pgbackend"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: Dramatiq broker and channel layer --------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
# Prepended to every Redis key and pub/sub channel name (Dramatiq's namespace, the channel
# layer's prefix, the session-stop channel): deployments, or test runs, sharing one Redis keep
# apart by prefix. Empty: the libraries' own names.
REDIS_KEY_PREFIX = env.str("REDIS_KEY_PREFIX", default="")


if REDIS_URL:
    DRAMATIQ_BROKER = {
        "BROKER": "dramatiq.brokers.redis.RedisBroker",
        # A worker that dies (SIGKILL, OOM) stops heartbeating; after this many ms another
        # worker requeues its unacked messages, and the session resumes from its ledger.
        "OPTIONS": {
            "url": REDIS_URL,
            "namespace": f"{REDIS_KEY_PREFIX}dramatiq",
            "heartbeat_timeout": env.int("DRAMATIQ_HEARTBEAT_TIMEOUT_MS", default=15000),
            # How many broker commands in a million also requeue dead workers' messages. The
            # default (1,000) does that every ~15 minutes on an idle worker; 50,000 every few seconds.
            "maintenance_chance": env.int("DRAMATIQ_MAINTENANCE_CHANCE", default=50_000),
        },
        "MIDDLEWARE": [
            "dramatiq.middleware.AgeLimit",
            "dramatiq.middleware.TimeLimit",
            "dramatiq.middleware.Callbacks",
            "dramatiq.middleware.Retries",
            "django_dramatiq.middleware.DbConnectionsMiddleware",
            "paper.worker.SessionSupervisor",
        ],
    }
    # Pub/sub layer: a group send is one PUBLISH that each daphne process fans out locally,
    # instead of one Redis list push and pop per subscriber. Frames are stored in the ledger,
    # so at-most-once live delivery loses nothing a late client cannot read back.
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "paper.channel_layer.FramesChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "prefix": f"{REDIS_KEY_PREFIX}asgi"},
        }
    }
else:
    DRAMATIQ_BROKER = {
        "BROKER": "dramatiq.brokers.stub.StubBroker",
        "OPTIONS": {},
        "MIDDLEWARE": [
            "dramatiq.middleware.AgeLimit",
            "dramatiq.middleware.TimeLimit",
            "dramatiq.middleware.Callbacks",
            "dramatiq.middleware.Retries",
            "django_dramatiq.middleware.DbConnectionsMiddleware",
            "paper.worker.SessionSupervisor",
        ],
    }
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
DRAMATIQ_AUTODISCOVER_MODULES = ["actors"]

# --- Auth, i18n, static -------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
# Production: `manage.py collectstatic` fills STATIC_ROOT (compressed, cache-busting names) and
# whitenoise serves it. Without collectstatic (embedded mode, tests) it serves from the finders.
WHITENOISE_USE_FINDERS = True
STATIC_ROOT.mkdir(exist_ok=True)  # whitenoise warns on every request while it is missing
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- Trading platform ------------------------------------------------------------
# Paper sessions: a new bar every bar interval (divided by the session's pace); the loop
# polls the broker, heartbeats and checks for stops every poll interval.
PAPER_BAR_INTERVAL_SECONDS = env.float("PAPER_BAR_INTERVAL_SECONDS", default=60.0)
PAPER_POLL_SECONDS = env.float("PAPER_POLL_SECONDS", default=1.0)
PAPER_WARMUP_BARS = env.int("PAPER_WARMUP_BARS", default=200)
# A running session whose heartbeat is older than this is swept as aborted (worker lost).
PAPER_STALE_SECONDS = env.float("PAPER_STALE_SECONDS", default=120.0)
# Session supervision in every worker (paper.worker): how often to reconcile; a running
# session with no heartbeat for PAPER_RESUME_AFTER_SECONDS is resumed elsewhere from its
# ledger, at most PAPER_MAX_RESUMES times; a queued one is re-enqueued after PAPER_REQUEUE_AFTER_SECONDS.
PAPER_RECONCILE_SECONDS = env.float("PAPER_RECONCILE_SECONDS", default=5.0)
PAPER_RESUME_AFTER_SECONDS = env.float("PAPER_RESUME_AFTER_SECONDS", default=15.0)
PAPER_MAX_RESUMES = env.int("PAPER_MAX_RESUMES", default=5)
PAPER_REQUEUE_AFTER_SECONDS = env.float("PAPER_REQUEUE_AFTER_SECONDS", default=60.0)
# How long a session waits out a database outage (retrying its write) before leaving itself
# to the reconciler.
PAPER_DB_OUTAGE_SECONDS = env.float("PAPER_DB_OUTAGE_SECONDS", default=60.0)
# A live session's reports and charts are written this long after it ends (0 = at once, inline).
PAPER_ARTIFACTS_DELAY_MS = env.int("PAPER_ARTIFACTS_DELAY_MS", default=1000)
# Frames a late WebSocket client receives before the live ones.
PAPER_FRAME_BACKLOG = env.int("PAPER_FRAME_BACKLOG", default=200)
# Worker threads of the in-process worker in embedded mode (one per concurrent session).
EMBEDDED_WORKER_THREADS = env.int("EMBEDDED_WORKER_THREADS", default=16)
# daphne processes `manage.py serve` runs on its one port in services mode (about one per core).
SERVE_PROCESSES = env.int("SERVE_PROCESSES", default=1)
# The paper metadata gate: a backtest of the bot's current config must be younger than this.
PAPER_GATE_MAX_AGE_HOURS = env.float("PAPER_GATE_MAX_AGE_HOURS", default=24 * 7)
# Packages a bot's dotted strategy path (`pkg.mod:Class`) may import from; built-in strategies
# are always available. A bot config from the API cannot name any other module.
PAPER_STRATEGY_PACKAGES = env.list("PAPER_STRATEGY_PACKAGES", default=["strategies"])
# Where run artifacts go (paper sessions and research runs).
OUTPUTS_DIR = Path(env.str("OUTPUTS_DIR", default=str(BASE_DIR / "outputs")))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="WARNING")},
}
