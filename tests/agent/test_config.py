"""Configuration: a written config loads back; every bad value is refused naming the file and the key."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from agent.config import AgentConfig, load_config, load_identity_key, write_config
from agent.errors import ConfigError


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


GOOD = """
server_url = "https://portal.example.org/"
serial = "GW-1"
identity_key = "identity.pem"
backend = "soft:card.se"
journal = "journal.sqlite"
"""


def test_a_minimal_config_loads_with_defaults_and_relative_paths_resolved(
    tmp_path: Path, key_file: Path
) -> None:
    config = load_config(_write(tmp_path, GOOD))
    assert config.server_url == "https://portal.example.org"
    assert config.identity_key == key_file
    assert config.backend == f"soft:{tmp_path / 'card.se'}"
    assert config.journal == tmp_path / "journal.sqlite"
    assert config.poll.min_s == 5.0 and config.timeouts.read_s == 30.0 and config.log_level == "INFO"


def test_a_written_config_loads_back_equal(tmp_path: Path, config: AgentConfig) -> None:
    path = write_config(tmp_path / "out.toml", config)
    assert load_config(path) == replace(config, path=path.resolve())


def test_poll_and_timeouts_tables_are_read(tmp_path: Path, key_file: Path) -> None:
    config = load_config(
        _write(
            tmp_path, GOOD + "[poll]\nmin_s = 2\nmax_s = 90.5\nbackoff_cap_s = 30\n[timeouts]\nread_s = 5\n"
        )
    )
    assert (config.poll.min_s, config.poll.max_s, config.poll.backoff_cap_s) == (2.0, 90.5, 30.0)
    assert config.timeouts.read_s == 5.0
    assert config.poll.clamp(1) == 2.0 and config.poll.clamp(1000) == 90.5
    assert config.poll.wait_s == 0


def test_a_long_poll_wait_is_read_and_must_stay_below_the_read_timeout(tmp_path: Path, key_file: Path) -> None:
    config = load_config(_write(tmp_path, GOOD + "[poll]\nwait_s = 20\n[timeouts]\nread_s = 30\n"))
    assert config.poll.wait_s == 20.0
    assert load_config(_write(tmp_path, GOOD + "[poll]\nwait_s = 0\n")).poll.wait_s == 0


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (GOOD + 'colour = "blue"\n', "colour"),
        (GOOD + "[poll]\nmin = 1\n", "poll.min"),
        (GOOD.replace('serial = "GW-1"', "serial = 7"), "serial"),
        (GOOD.replace('serial = "GW-1"', 'serial = ""'), "serial"),
        (GOOD.replace('serial = "GW-1"\n', ""), "serial"),
        (GOOD.replace("https://portal.example.org/", "ftp://portal.example.org"), "server_url"),
        (GOOD.replace("https://portal.example.org/", "https://"), "server_url"),
        (GOOD.replace("https://portal.example.org/", "https://u:p@portal"), "server_url"),
        (GOOD.replace("soft:card.se", "pkcs99:x"), "backend"),
        (GOOD.replace("soft:card.se", "soft:"), "backend"),
        (GOOD.replace("journal.sqlite", "nowhere/journal.sqlite"), "journal"),
        (GOOD + 'log_level = "LOUD"\n', "log_level"),
        (GOOD + 'ca_file = "missing.pem"\n', "ca_file"),
        (GOOD + '[poll]\nmin_s = "5"\n', "poll.min_s"),
        (GOOD + "[poll]\nmin_s = true\n", "poll.min_s"),
        (GOOD + "[poll]\nmin_s = -1\n", "poll.min_s"),
        (GOOD + "[poll]\nmin_s = 100\nmax_s = 10\n", "poll.min_s"),
        (GOOD + "[timeouts]\nread_s = 0\n", "timeouts.read_s"),
        (GOOD + "[poll]\nwait_s = 26\n", "poll.wait_s"),
        (GOOD + "[poll]\nwait_s = -1\n", "poll.wait_s"),
        (GOOD + "[poll]\nwait_s = 20\n[timeouts]\nread_s = 22\n", "poll.wait_s"),
        (GOOD + "poll = 3\n", "poll"),
        (GOOD.replace("identity.pem", "other.pem"), "identity_key"),
    ],
)
def test_a_bad_value_is_refused_naming_the_file_and_the_key(
    tmp_path: Path, key_file: Path, text: str, key: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value).startswith(f"{path}: {key}"), str(e.value)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_config(tmp_path / "nope.toml")


def test_invalid_toml_is_refused_with_its_position(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"invalid TOML: .*line 1"):
        load_config(_write(tmp_path, "server_url = \n"))


def test_a_key_file_readable_by_others_is_refused(tmp_path: Path, key_file: Path) -> None:
    os.chmod(key_file, 0o644)
    with pytest.raises(ConfigError, match=r"identity_key: .* mode 0644.*chmod 600"):
        load_config(_write(tmp_path, GOOD))


def test_a_key_file_that_is_not_a_p256_key_is_refused(tmp_path: Path, key_file: Path) -> None:
    key_file.write_text("not a key")
    with pytest.raises(ConfigError, match="not an unencrypted PEM private key"):
        load_identity_key(key_file)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_key_file_is_refused(tmp_path: Path, key_file: Path) -> None:
    os.chmod(key_file, 0o000)
    with pytest.raises(ConfigError, match="cannot be read"):
        load_identity_key(key_file)
