"""``python -m agent`` in fresh interpreters: init, show-config, run, exit codes."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from agent.httpsig import key_id
from tests.agent.fakes import GET_CPLC, SELECT_ISD, FakeServer, HttpFakePortal, script

ROOT = Path(__file__).resolve().parents[2]


def _agent(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


def _init(
    tmp_path: Path, server: str = "https://portal.example", *extra: str
) -> subprocess.CompletedProcess[str]:
    return _agent(
        "init", "--config", str(tmp_path / "agent.toml"), "--server", server, "--serial", "GW-9", *extra
    )


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_creates_a_soft_se_an_identity_and_a_config_and_prints_them(tmp_path: Path) -> None:
    run = _init(tmp_path)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    public = load_pem_public_key(out["identity_public_key"].encode())
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert out["serial"] == "GW-9" and out["key_id"] == key_id(public)
    se = out["se"]
    assert se["isd_aid"] == "A000000151000000" and se["kvn"] == 0x30 and se["i_param"] == 0x70
    assert se["sequence_counter"] == 1 and len(se["serial"]) == 8 and se["cplc"][24:32] == se["serial"]
    keys_file = Path(out["isd_keys_file"])
    keys = json.loads(keys_file.read_text())
    assert all(len(bytes.fromhex(keys[k])) == 16 for k in ("enc", "mac", "dek"))
    assert keys["enc"] not in run.stdout  # the keys go to the file only
    assert _mode(keys_file) == 0o600
    assert _mode(tmp_path / "agent.identity.pem") == 0o600
    assert (tmp_path / "agent.se").exists()
    # the CASD's public key, generated inside the card, for the CA to certify; it is the card's own
    from gp.card import SoftCard

    card = SoftCard.open(str(tmp_path / "agent.se"))
    point = bytes.fromhex(se["casd_public_key"])
    assert point[0] == 4 and len(point) == 65
    assert ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point) == card.casd_public_key()
    card.close()


def test_init_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    first = json.loads(_init(tmp_path).stdout)
    again = _init(tmp_path)
    assert again.returncode == 2 and "--force" in again.stderr and "Traceback" not in again.stderr
    forced = _init(tmp_path, "https://portal.example", "--force")
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout)["key_id"] != first["key_id"]


def test_init_with_a_bad_url_writes_nothing(tmp_path: Path) -> None:
    run = _init(tmp_path, "ftp://portal")
    assert run.returncode == 2 and "server_url" in run.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_bad_config_is_one_line_on_stderr_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text('server_url = "https://x"\nsurprise = 1\n')
    for command in ("run", "show-config"):
        run = _agent(command, "--config", str(tmp_path / "bad.toml"))
        assert run.returncode == 2
        assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
        assert "surprise" in run.stderr


def test_show_config_prints_the_loaded_configuration(tmp_path: Path) -> None:
    _init(tmp_path)
    run = _agent("show-config", "--config", str(tmp_path / "agent.toml"))
    assert run.returncode == 0, run.stderr
    shown = json.loads(run.stdout)
    assert shown["serial"] == "GW-9" and shown["backend"] == f"soft:{tmp_path / 'agent.se'}"


def test_run_once_exchanges_with_the_portal_and_runs_the_work(tmp_path: Path) -> None:
    # given a provisioned device registered in a (fake) portal with a script queued for it
    portal = HttpFakePortal(FakeServer(queue=[script("i1", (SELECT_ISD, ("9000",)), (GET_CPLC, ("9000",)))]))
    with portal.serving():
        out = json.loads(_init(tmp_path, portal.url).stdout)
        public = load_pem_public_key(out["identity_public_key"].encode())
        assert isinstance(public, ec.EllipticCurvePublicKey)
        portal.register(public)
        # when the agent runs one cycle
        run = _agent("run", "--config", str(tmp_path / "agent.toml"), "--once")
    # then the script ran on the soft SE and its result reached the portal
    assert run.returncode == 0, run.stderr
    assert portal.fake.results["i1"].status == "completed"
    assert portal.fake.requests[0].agent["se_serial"] == out["se"]["serial"]


def test_run_once_against_an_unreachable_portal_exits_5(tmp_path: Path) -> None:
    _init(tmp_path, "http://127.0.0.1:9")
    run = _agent("run", "--config", str(tmp_path / "agent.toml"), "--once")
    assert run.returncode == 5 and "unreachable" in run.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_run_exits_cleanly_on_a_stop_signal(tmp_path: Path, sig: signal.Signals) -> None:
    portal = HttpFakePortal(FakeServer(poll_after=3600))
    with portal.serving():
        out = json.loads(_init(tmp_path, portal.url).stdout)
        public = load_pem_public_key(out["identity_public_key"].encode())
        assert isinstance(public, ec.EllipticCurvePublicKey)
        portal.register(public)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--config", str(tmp_path / "agent.toml")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        deadline = time.monotonic() + 30
        while not portal.fake.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        assert portal.fake.requests, "the agent never polled"
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 0, stderr
    assert "event=stopped" in stderr and "Traceback" not in stderr
