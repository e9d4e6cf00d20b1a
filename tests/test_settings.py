"""The one settings module: the embedded default, and refusing bad environments at start-up.

Settings are read once per process, so each case starts a fresh interpreter with exactly the
environment under test (nothing inherited from the test run's own DATABASE_URL/REDIS_URL).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from portal.env import ImproperEnvironment, env_bool, env_int, env_list, env_str, env_url

ROOT = Path(__file__).resolve().parent.parent
GOOD_SECRET = "x" * 20 + "-a-long-random-test-secret-value-0123456789"
SETUP = "import django,os; os.environ['DJANGO_SETTINGS_MODULE']='portal.settings'; django.setup()"
REPORT = (
    SETUP + "\nfrom django.conf import settings as s\nimport json\n"
    "print(json.dumps({'engine': s.DATABASES['default']['ENGINE'],"
    " 'layer': s.CHANNEL_LAYERS['default']['BACKEND'],"
    " 'eager': s.CELERY_TASK_ALWAYS_EAGER, 'broker': s.CELERY_BROKER_URL, 'debug': s.DEBUG,"
    " 'cache': s.CACHES['default']['BACKEND'], 'secret_is_dev': s.SECRET_KEY == s.DEV_SECRET_KEY,"
    " 'ttl': s.INVITATION_TTL_HOURS}))"
)


def run_settings(
    env: dict[str, str], code: str = SETUP, tmp: Path | None = None
) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    if tmp is not None:
        base["TESSERA_VAR_DIR"] = str(tmp)
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def failure_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The last line of the traceback: the exception and its message."""
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


# --- start-up refusals --------------------------------------------------------------------------


def test_production_with_the_development_secret_key_refuses_to_start(tmp_path: Path) -> None:
    proc = run_settings({"DEBUG": "0", "DATABASE_URL": "postgres://u@127.0.0.1:5432/x"}, tmp=tmp_path)
    assert proc.returncode != 0
    assert "ImproperEnvironment" in failure_line(proc)
    assert "SECRET_KEY" in failure_line(proc)


def test_a_deployment_that_forgets_secret_key_refuses_to_start_even_without_debug_set(tmp_path: Path) -> None:
    # DATABASE_URL alone means "not a laptop": DEBUG defaults off, so the dev key is refused
    proc = run_settings({"DATABASE_URL": "postgres://u@127.0.0.1:5432/x"}, tmp=tmp_path)
    assert proc.returncode != 0
    assert "SECRET_KEY" in failure_line(proc)


def test_a_misspelt_boolean_stops_the_process_naming_the_variable(tmp_path: Path) -> None:
    proc = run_settings({"DEBUG": "ture"}, tmp=tmp_path)
    assert proc.returncode != 0
    assert "DEBUG='ture'" in failure_line(proc)
    assert "not a boolean" in failure_line(proc)


def test_an_unsupported_database_stops_the_process(tmp_path: Path) -> None:
    proc = run_settings({"DATABASE_URL": "mysql://x", "SECRET_KEY": GOOD_SECRET}, tmp=tmp_path)
    assert proc.returncode != 0
    assert "DATABASE_URL must start with" in failure_line(proc)
    assert "postgres://" in failure_line(proc)


@pytest.mark.parametrize(
    "env, named",
    [
        ({"REDIS_URL": "http://127.0.0.1:6379/0", "SECRET_KEY": GOOD_SECRET}, "REDIS_URL"),
        ({"SECRET_KEY": "short"}, "SECRET_KEY"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
        ({"TESSERA_INVITATION_TTL_HOURS": "0"}, "TESSERA_INVITATION_TTL_HOURS"),
        ({"TESSERA_INVITATION_TTL_HOURS": "soon"}, "TESSERA_INVITATION_TTL_HOURS"),
        ({"SESSION_COOKIE_SECURE": "maybe"}, "SESSION_COOKIE_SECURE"),
        ({"TESSERA_REQUIRE_SERVICES": "2"}, "TESSERA_REQUIRE_SERVICES"),
    ],
    ids=["redis-scheme", "short-secret", "log-level", "ttl-zero", "ttl-word", "cookie-flag", "require-flag"],
)
def test_other_bad_values_stop_the_process_naming_the_variable(
    env: dict[str, str], named: str, tmp_path: Path
) -> None:
    proc = run_settings(env, tmp=tmp_path)
    assert proc.returncode != 0, proc.stdout
    assert "ImproperEnvironment" in failure_line(proc)
    assert named in failure_line(proc)


# --- what the environment selects ----------------------------------------------------------------


def test_nothing_set_is_the_embedded_default(tmp_path: Path) -> None:
    proc = run_settings({}, code=REPORT, tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got == {
        "engine": "django.db.backends.sqlite3",
        "layer": "channels.layers.InMemoryChannelLayer",
        "eager": True,
        "broker": "memory://",
        "debug": True,
        "cache": "django.core.cache.backends.locmem.LocMemCache",
        "secret_is_dev": True,
        "ttl": 72,
    }


def test_postgres_and_redis_urls_switch_every_backend(tmp_path: Path) -> None:
    env = {
        "DATABASE_URL": "postgres://u@127.0.0.1:5432/x",
        "REDIS_URL": "redis://127.0.0.1:6379/15",
        "SECRET_KEY": GOOD_SECRET,
    }
    proc = run_settings(env, code=REPORT, tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["engine"] == "django.db.backends.postgresql"
    assert got["layer"] == "channels_redis.core.RedisChannelLayer"
    assert got["eager"] is False
    assert got["broker"] == "redis://127.0.0.1:6379/15"
    assert got["cache"] == "portal.cache.SharedPoolRedisCache"  # Django's RedisCache, one pool per process
    assert got["debug"] is False
    assert got["secret_is_dev"] is False


def test_debug_may_be_forced_on_outside_the_embedded_default(tmp_path: Path) -> None:
    proc = run_settings(
        {"DATABASE_URL": "sqlite:///" + str(tmp_path / "db.sqlite3"), "DEBUG": "1"}, code=REPORT, tmp=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["debug"] is True


# --- portal.env helpers ------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["1", "true", "TRUE", " yes ", "On"])
def test_env_bool_reads_true_spellings(raw: str) -> None:
    assert env_bool("X", False, environ={"X": raw}) is True


@pytest.mark.parametrize("raw", ["0", "false", "No", "off", ""])
def test_env_bool_reads_false_spellings(raw: str) -> None:
    assert env_bool("X", True, environ={"X": raw}) is False


def test_env_bool_uses_the_default_only_when_unset() -> None:
    assert env_bool("X", True, environ={}) is True
    assert env_bool("X", False, environ={}) is False


@pytest.mark.parametrize("raw", ["ture", "2", "y", "enabled"])
def test_env_bool_refuses_anything_else_naming_variable_and_value(raw: str) -> None:
    with pytest.raises(ImproperEnvironment, match=f"^FLAG={raw!r} is not a boolean"):
        env_bool("FLAG", False, environ={"FLAG": raw})


def test_env_int_reads_defaults_blanks_and_values() -> None:
    assert env_int("N", 7, environ={}) == 7
    assert env_int("N", 7, environ={"N": "  "}) == 7
    assert env_int("N", 7, environ={"N": " 42 "}) == 42
    assert env_int("N", 7, environ={"N": "-3"}) == -3


def test_env_int_refuses_non_integers_and_values_out_of_range() -> None:
    with pytest.raises(ImproperEnvironment, match="N='4.5' is not an integer"):
        env_int("N", 1, environ={"N": "4.5"})
    with pytest.raises(ImproperEnvironment, match="N=0 is below the minimum 1"):
        env_int("N", 1, minimum=1, environ={"N": "0"})
    with pytest.raises(ImproperEnvironment, match="N=11 is above the maximum 10"):
        env_int("N", 1, maximum=10, environ={"N": "11"})
    assert env_int("N", 1, minimum=1, maximum=10, environ={"N": "10"}) == 10


def test_env_list_splits_on_commas_and_drops_blanks() -> None:
    assert env_list("L", ["a"], environ={}) == ["a"]
    assert env_list("L", ["a"], environ={"L": " x , ,y,"}) == ["x", "y"]
    assert env_list("L", ["a"], environ={"L": ""}) == []


def test_env_list_default_is_a_copy() -> None:
    default = ["a"]
    env_list("L", default, environ={}).append("b")
    assert default == ["a"]


def test_env_str_reads_value_or_default() -> None:
    assert env_str("S", "d", environ={}) == "d"
    assert env_str("S", "d", environ={"S": "v"}) == "v"


def test_env_url_is_empty_when_unset_or_blank() -> None:
    assert env_url("U", schemes=("redis",), environ={}) == ""
    assert env_url("U", schemes=("redis",), environ={"U": "   "}) == ""


def test_env_url_accepts_listed_schemes_and_strips_whitespace() -> None:
    assert env_url("U", schemes=("redis", "rediss"), environ={"U": " rediss://h:1/0 "}) == "rediss://h:1/0"


@pytest.mark.parametrize("raw", ["mysql://x", "redis:/nohost", "127.0.0.1:6379", "REDIS://x"])
def test_env_url_refuses_other_schemes_without_echoing_the_url(raw: str) -> None:
    with pytest.raises(ImproperEnvironment) as info:
        env_url("U", schemes=("redis",), environ={"U": raw})
    assert str(info.value) == "U must start with one of redis://"


def test_env_url_never_echoes_credentials() -> None:
    with pytest.raises(ImproperEnvironment) as info:
        env_url("DATABASE_URL", schemes=("postgres",), environ={"DATABASE_URL": "mysql://root:hunter2@db/x"})
    assert "hunter2" not in str(info.value)
