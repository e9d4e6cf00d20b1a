"""Tessera's one settings module, driven by environment variables (DESIGN §9).

Nothing set: the embedded default — SQLite, in-memory channel layer, Celery in eager mode, local
cache, a development secret key — so ``make run`` works on a laptop. ``DATABASE_URL`` and
``REDIS_URL`` switch to PostgreSQL and Redis (Celery broker and results, channel layer, cache).
Bad values stop the process at start-up (see ``portal.env``).
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url

from portal.env import ImproperEnvironment, env_bool, env_int, env_list, env_str, env_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("TESSERA_VAR_DIR", str(BASE_DIR / "var")))
(VAR_DIR / "static").mkdir(parents=True, exist_ok=True)

# The embedded default (no DATABASE_URL, no REDIS_URL) is a developer's laptop: DEBUG defaults on
# there and off everywhere else, so a deployment that forgets SECRET_KEY refuses to start.
EMBEDDED = not env_str("DATABASE_URL") and not env_str("REDIS_URL")
DEV_SECRET_KEY = "tessera-insecure-development-key-do-not-use-in-production"
DEBUG = env_bool("DEBUG", EMBEDDED)
SECRET_KEY = env_str("SECRET_KEY", DEV_SECRET_KEY)
if not DEBUG and SECRET_KEY == DEV_SECRET_KEY:
    raise ImproperEnvironment(
        "SECRET_KEY is the development default while DEBUG is off; set SECRET_KEY to a long random "
        "value (or DEBUG=1 for development)"
    )
if len(SECRET_KEY) < 32:
    raise ImproperEnvironment("SECRET_KEY must be at least 32 characters long")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "testserver", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "portal",
    "audit",
    "tenants",
    "devices",
    "keys",
    "jobs",
    "notifications",
    "switches",
    "campaigns",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"
ASGI_APPLICATION = "portal.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "portal" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "portal.context.organisations",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
DATABASE_URL = env_url("DATABASE_URL", schemes=("postgres", "postgresql", "sqlite"))
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 60))}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(VAR_DIR / "tessera.sqlite3"),
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
            # Tests run on a file too (one per process), not Django's shared in-memory database:
            # its table locks fail at once where the real file waits ``timeout`` seconds, so
            # concurrency tests would test the test database instead of the embedded default.
            "TEST": {"NAME": str(VAR_DIR / f"test-tessera-{os.getpid()}.sqlite3")},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: Celery, channel layer, cache ----------------------------------------------------
REDIS_URL = env_url("REDIS_URL", schemes=("redis", "rediss"))
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_RESULT_BACKEND = REDIS_URL
    CELERY_TASK_ALWAYS_EAGER = False
    CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [REDIS_URL]}}
    }
    CACHES = {"default": {"BACKEND": "portal.cache.SharedPoolRedisCache", "LOCATION": REDIS_URL}}
else:
    CELERY_BROKER_URL = "memory://"
    CELERY_RESULT_BACKEND = "cache+memory://"
    CELERY_TASK_ALWAYS_EAGER = True
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1

# --- Auth -----------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
INVITATION_TTL_HOURS = env_int("TESSERA_INVITATION_TTL_HOURS", 72, minimum=1, maximum=24 * 30)

# --- Email: console by default; nothing external is contacted ------------------------------
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "tessera@localhost")
TESSERA_BASE_URL = env_str("TESSERA_BASE_URL", "http://127.0.0.1:8000")

# --- API ------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "portal.authentication.SessionAuthentication401",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "portal.api.exception_handler",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_PARSER_CLASSES": [
        "portal.parsers.StrictJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Tessera API",
    "DESCRIPTION": "Multi-stakeholder trust portal for GlobalPlatform secure elements and TEEs.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SCHEMA_PATH_PREFIX": "/api/v1",
}
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("TESSERA_MAX_BODY_BYTES", 2 * 1024 * 1024, minimum=1024)

# --- Vault (DESIGN §6; keys.vault) ----------------------------------------------------------
# The master key itself comes from TESSERA_VAULT_MASTER_KEY or TESSERA_VAULT_MASTER_KEY_FILE, read
# by keys.vault (never kept in settings). The embedded default generates the file on first use.
# "pkcs11": a non-extractable key in a token, from TESSERA_PKCS11_* (keys.pkcs11). During a rewrap
# (manage.py vault_rewrap) TESSERA_VAULT_NEW_BACKEND names the new key, read from TESSERA_VAULT_NEW_*.
TESSERA_VAULT_BACKEND = env_str("TESSERA_VAULT_BACKEND", "local").strip() or "local"
TESSERA_VAULT_NEW_BACKEND = env_str("TESSERA_VAULT_NEW_BACKEND", "").strip()
TESSERA_VAULT_GENERATE_KEY = env_bool("TESSERA_VAULT_GENERATE_KEY", EMBEDDED or DEBUG)

# --- Key policy and the CA (keys.policy, keys.ca) ------------------------------------------------
TESSERA_KEY_POLICY = env_str("TESSERA_KEY_POLICY", "nist").strip() or "nist"
if TESSERA_KEY_POLICY not in ("nist", "aes256-only"):
    raise ImproperEnvironment(f"TESSERA_KEY_POLICY={TESSERA_KEY_POLICY!r}: use nist or aes256-only")
# Intended crypto-period of a new key set (SP 800-57 Pt 1 Table 1: up to 2 years for a symmetric
# key-wrapping/authentication key's originator usage period).
TESSERA_KEY_CRYPTO_PERIOD_DAYS = env_int("TESSERA_KEY_CRYPTO_PERIOD_DAYS", 730, minimum=1, maximum=36500)
# Which CA certifies SEs' CASD keys when several are active: its id or its organisation's slug.
TESSERA_CA = env_str("TESSERA_CA", "").strip()

# --- i18n / static --------------------------------------------------------------------------
LANGUAGE_CODE = "en-gb"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "portal" / "static"]
WHITENOISE_USE_FINDERS = True

# --- Logging: structured enough to grep, never key material -----------------------------------
LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
if LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise ImproperEnvironment(f"LOG_LEVEL={LOG_LEVEL!r} is not a logging level")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
}

# --- Jobs and the agent endpoint (DESIGN §7–8) -------------------------------------------------
TESSERA_JOB_NO_SHOW_SECONDS = env_int("TESSERA_JOB_NO_SHOW_SECONDS", 24 * 3600, minimum=1)
TESSERA_JOB_STEP_SECONDS = env_int("TESSERA_JOB_STEP_SECONDS", 600, minimum=1)
# Provider switch (switches/): each saga job waits this long for a sleeping device; the new provider
# has this long to send its key-loading package; a switch idle this long is advanced by the sweeper.
TESSERA_SWITCH_STEP_NO_SHOW_SECONDS = env_int("TESSERA_SWITCH_STEP_NO_SHOW_SECONDS", 14 * 24 * 3600, minimum=1)
TESSERA_SWITCH_KEYS_SECONDS = env_int("TESSERA_SWITCH_KEYS_SECONDS", 7 * 24 * 3600, minimum=1)
TESSERA_SWITCH_SWEEP_AFTER_SECONDS = env_int("TESSERA_SWITCH_SWEEP_AFTER_SECONDS", 30, minimum=0)
# Switch campaigns (campaigns/): live progress events at most this often; running campaigns are
# ticked by beat this often (besides every switch end and every jobs sweep).
TESSERA_CAMPAIGN_PROGRESS_SECONDS = env_int("TESSERA_CAMPAIGN_PROGRESS_SECONDS", 3, minimum=0)
TESSERA_CAMPAIGN_TICK_SECONDS = env_int("TESSERA_CAMPAIGN_TICK_SECONDS", 5, minimum=1)
TESSERA_JOB_INPUT_SECONDS = env_int("TESSERA_JOB_INPUT_SECONDS", 300, minimum=1)  # load_keys_scp11: wait for round 2
TESSERA_JOB_OVERALL_SECONDS = env_int("TESSERA_JOB_OVERALL_SECONDS", 7 * 24 * 3600, minimum=1)
TESSERA_JOB_RETRY_BASE_SECONDS = env_int("TESSERA_JOB_RETRY_BASE_SECONDS", 5, minimum=0)
TESSERA_AGENT_POLL_SECONDS = env_int("TESSERA_AGENT_POLL_SECONDS", 5 if EMBEDDED else 300, minimum=1)
TESSERA_AGENT_HOLD_MS = env_int("TESSERA_AGENT_HOLD_MS", 1500, minimum=0, maximum=25000)
TESSERA_AGENT_LONG_POLL_SECONDS = env_int("TESSERA_AGENT_LONG_POLL_SECONDS", 25, minimum=0, maximum=25)
TESSERA_AGENT_MAX_SKEW_SECONDS = env_int("TESSERA_AGENT_MAX_SKEW_SECONDS", 300, minimum=1)
TESSERA_WEBHOOK_TIMEOUT_SECONDS = env_int("TESSERA_WEBHOOK_TIMEOUT_SECONDS", 5, minimum=1, maximum=30)
CELERY_BEAT_SCHEDULE = {
    "jobs-sweep": {"task": "jobs.tasks.sweep", "schedule": env_int("TESSERA_SWEEP_SECONDS", 15, minimum=1)},
    "notifications-retry": {"task": "notifications.retry_due", "schedule": 30},
    "campaigns-tick": {"task": "campaigns.tick_all", "schedule": TESSERA_CAMPAIGN_TICK_SECONDS},
}

# Tests that need PostgreSQL/Redis/pcscd fail instead of skipping when this is set (CI sets it).
TESSERA_REQUIRE_SERVICES = env_bool("TESSERA_REQUIRE_SERVICES", False)
