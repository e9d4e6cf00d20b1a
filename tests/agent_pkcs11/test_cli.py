"""``python -m agent`` with a token, in real processes: init, the start-up probe, PIN and login checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import load_config
from agent.errors import ConfigError
from agent.pkcs11.profile import NAMES, REQUIRED_MECHANISMS
from agent.pkcs11.token import open_token

pytestmark = pytest.mark.services

ROOT = Path(__file__).resolve().parents[2]


def _agent(hsm, *args: str, conf: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "SOFTHSM2_CONF": str(conf or hsm.hsm.conf)}
    return subprocess.run(
        [sys.executable, "-m", "agent", *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120
    )


def _pin_file(hsm, tmp_path: Path, mode: int = 0o600) -> Path:
    path = tmp_path / "token.pin"
    path.write_text(hsm.hsm.pin + "\n")
    path.chmod(mode)
    return path


def _init(hsm, tmp_path: Path, label: str, *extra: str) -> subprocess.CompletedProcess:
    return _agent(
        hsm,
        "init",
        "--config", str(tmp_path / "agent.toml"),
        "--server", "http://127.0.0.1:9",
        "--serial", "GW-TEE-2",
        "--token-module", hsm.library,
        "--token-label", label,
        "--token-pin-file", str(_pin_file(hsm, tmp_path)),
        *extra,
    )  # fmt: skip


def test_init_with_a_token_puts_the_identity_and_the_soft_se_state_key_in_it(softhsm_agent, tmp_path):
    from agent.backends.soft import SoftBackend
    from agent.errors import BackendError
    from agent.httpsig import key_id

    run = _init(softhsm_agent, tmp_path, "gateway")
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    # the identity is in the token: no PEM file; the config names the token, not a key file
    assert not (tmp_path / "agent.identity.pem").exists()
    config = load_config(tmp_path / "agent.toml")
    assert config.identity_key is None and config.token is not None and config.token.label == "gateway"
    token = open_token(softhsm_agent.library, "gateway", pin=softhsm_agent.hsm.pin)
    try:
        assert key_id(token.identity_public_key()) == out["key_id"]
        assert bytes.fromhex(out["receive_public_key"]) == token.receive_public_point()
        # the soft SE's state is sealed under a key from the token, not a .secret file beside it
        state = str(tmp_path / "agent.se")
        assert not Path(state + ".secret").exists()
        with pytest.raises(BackendError):
            SoftBackend(state)  # without the token
        backend = SoftBackend(state, state_key=token.state_key())
        assert backend.identifiers()["se_serial"] == out["se"]["serial"]
        backend.close()
    finally:
        token.close()
    # a second init refuses to replace the token's identity without --force
    again = _init(softhsm_agent, tmp_path / "..", "gateway")
    assert again.returncode == 3 and "already holds an identity key (use --force)" in again.stderr


def test_init_with_the_token_as_backend_reports_its_device_id(softhsm_agent, tmp_path):
    run = _init(softhsm_agent, tmp_path, "tee-only", "--backend", "pkcs11:tee-only")
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    token = open_token(softhsm_agent.library, "tee-only", pin=softhsm_agent.hsm.pin)
    try:
        assert out["se"]["serial"] == token.device_id().hex().upper()
    finally:
        token.close()
    assert load_config(tmp_path / "agent.toml").backend == "pkcs11:tee-only"
    show = _agent(softhsm_agent, "show-config", "--config", str(tmp_path / "agent.toml"))
    assert show.returncode == 0 and json.loads(show.stdout)["token"]["label"] == "tee-only"


def test_run_refuses_a_token_without_ecdh_and_names_the_optee_release(softhsm_agent, tmp_path):
    assert _init(softhsm_agent, tmp_path, "tee-only", "--force").returncode == 0
    # the same tokens, offered by a library configured without CKM_ECDH1_DERIVE
    names = sorted(f"CKM_{NAMES[m]}" for m, _, _ in REQUIRED_MECHANISMS if NAMES[m] != "ECDH1_DERIVE")
    conf = tmp_path / "no-ecdh.conf"
    conf.write_text(softhsm_agent.hsm.conf.read_text() + f"slots.mechanisms = {','.join(names)}\n")

    run = _agent(softhsm_agent, "run", "--once", "--config", str(tmp_path / "agent.toml"), conf=conf)

    assert run.returncode == 3, run.stderr
    assert "needs optee_os ≥ 3.17 for ECDH1_DERIVE (to receive keys from Tessera)" in run.stderr
    assert "AES_CMAC" not in run.stderr  # only what is missing is named


def test_a_pin_file_readable_by_others_is_refused_with_the_fix(softhsm_agent, tmp_path):
    assert _init(softhsm_agent, tmp_path, "tee-only", "--force").returncode == 0
    (tmp_path / "token.pin").chmod(0o640)
    with pytest.raises(
        ConfigError, match=r"token.pin_file: .* mode 0640, readable beyond its owner; run `chmod 600"
    ):
        load_config(tmp_path / "agent.toml")


def test_tee_identity_login_needs_a_protected_authentication_path(softhsm_agent):
    with pytest.raises(ConfigError, match="no protected authentication path"):
        open_token(softhsm_agent.library, "tee-only", tee_identity=True)


def test_a_token_found_by_a_label_that_does_not_exist_lists_those_there(softhsm_agent):
    with pytest.raises(ConfigError, match=r"no token labelled 'nope' .*found: .*agent"):
        open_token(softhsm_agent.library, "nope", pin="0000")


@pytest.mark.parametrize(
    "table, message",
    [
        ('module = "/nonexistent.so"\nlabel = "a"\nlogin = "tee-identity"', "token.module"),
        ('label = "a"\nlogin = "tee-identity"', "token.module: missing"),
        ('module = "{lib}"\nlabel = "a"', "token.pin_file: missing"),
        ('module = "{lib}"\nlabel = "a"\nlogin = "magic"', "token.login: must be one of"),
        ('module = "{lib}"\nlabel = "a"\nlogin = "tee-identity"\nslot = 0', "token.slot: unknown key"),
    ],
)
def test_a_bad_token_table_is_a_config_error_naming_the_key(softhsm_agent, tmp_path, table, message):
    (tmp_path / "j").mkdir()
    (tmp_path / "agent.toml").write_text(
        'server_url = "http://127.0.0.1:9"\nserial = "S"\nbackend = "pcsc:X"\njournal = "j/journal"\n'
        "[token]\n" + table.format(lib=softhsm_agent.library) + "\n"
    )
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path / "agent.toml")
