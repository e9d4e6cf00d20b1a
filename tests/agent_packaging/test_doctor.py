"""``python -m agent doctor`` against the real portal (pytest-django's live server running the
shipped URLconf and views): every check passing, then each check failing for its own reason."""

from __future__ import annotations

import json
import socket
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agent.doctor import EXIT_DOCTOR_FAILED, check_signature, diagnose
from agent.instance import journal_lock
from tests.agent_packaging.conftest import enrol, provision, run_agent


def _statuses(stdout: str) -> dict[str, list[str]]:
    """{check name: [statuses in order]} from the doctor's text report."""
    out: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        if line.startswith("[") and "]" in line:
            status, rest = line[1:].split("]", 1)
            out.setdefault(rest.split()[0], []).append(status.strip())
    return out


def _doctor(
    config: Path, *extra: str, env: dict[str, str] | None = None
) -> tuple[int, str, dict[str, list[str]]]:
    out = run_agent("doctor", "--config", str(config), *extra, env=env)
    assert not out.stderr.strip() or "Traceback" not in out.stderr, out.stderr
    return out.returncode, out.stdout, _statuses(out.stdout)


def test_all_checks_pass_for_an_enrolled_gateway(live_server: Any, manufacturer: Any, tmp_path: Path) -> None:
    gw = provision(tmp_path / "gw", live_server.url)
    enrol(manufacturer, gw)
    code, stdout, statuses = _doctor(gw.config)
    assert code == 0, stdout
    assert statuses == {
        "config": ["OK"],
        "reachability": ["OK"],
        "clock": ["OK"],
        "signature": ["OK"],
        "backend": ["OK"],
    }, stdout
    assert gw.init["key_id"] in stdout
    assert gw.init["se"]["serial"] in stdout  # the soft SE's identifiers were read
    assert "0 failed, 0 warnings" in stdout
    # The probe is not an exchange: the portal did not record the device as seen (jobs.exchange
    # marks it first thing), so it dispatched nothing either.
    from django.core.cache import cache

    from devices.models import Device
    from jobs.exchange import _last_seen_key

    device = Device.objects.get(serial=gw.init["serial"])
    assert cache.get(_last_seen_key(str(device.pk))) is None


def test_json_report(live_server: Any, manufacturer: Any, tmp_path: Path) -> None:
    gw = provision(tmp_path / "gw", live_server.url)
    enrol(manufacturer, gw)
    out = run_agent("doctor", "--config", str(gw.config), "--json")
    assert out.returncode == 0, out.stdout
    checks = json.loads(out.stdout)
    assert [c["name"] for c in checks] == ["config", "reachability", "clock", "signature", "backend"]
    assert {c["status"] for c in checks} == {"OK"}


def test_bad_config_fails_with_the_key_and_a_fix(tmp_path: Path) -> None:
    gw = provision(tmp_path / "gw", "http://127.0.0.1:9")
    text = gw.config.read_text()
    gw.config.write_text(text + "\nbogus_key = 1\n")
    code, stdout, statuses = _doctor(gw.config)
    assert code == EXIT_DOCTOR_FAILED
    assert statuses == {"config": ["FAIL"]}, stdout  # the other checks need the configuration
    assert "bogus_key: unknown key" in stdout and "fix:" in stdout

    gw.config.write_text(text)
    key = Path(gw.init["config"]).with_name("agent.identity.pem")
    key.chmod(0o644)
    code, stdout, statuses = _doctor(gw.config)
    assert code == EXIT_DOCTOR_FAILED and statuses == {"config": ["FAIL"]}, stdout
    assert "chmod 600" in stdout

    code, stdout, _ = _doctor(tmp_path / "missing.toml")
    assert code == EXIT_DOCTOR_FAILED and "configuration file not found" in stdout


def test_loose_permissions_and_a_leftover_handover_file_warn(
    live_server: Any, manufacturer: Any, tmp_path: Path
) -> None:
    gw = provision(tmp_path / "gw", live_server.url)
    enrol(manufacturer, gw)
    gw.config.chmod(0o666)
    gw.card.chmod(0o644)
    leftover = gw.card.with_name(gw.card.name + ".isd-keys.json")
    leftover.write_text("{}")
    code, stdout, statuses = _doctor(gw.config)
    assert code == 0, stdout  # warnings only
    assert statuses["config"] == ["OK", "WARN", "WARN", "WARN"], stdout
    assert "chmod go-w" in stdout and f"chmod 600 {gw.card}" in stdout and "shred -u" in stdout


def test_unreachable_server_fails_reachability(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    gw = provision(tmp_path / "gw", f"http://127.0.0.1:{port}")
    code, stdout, statuses = _doctor(gw.config)
    assert code == EXIT_DOCTOR_FAILED
    assert statuses == {
        "config": ["OK"],
        "reachability": ["FAIL"],
        "clock": ["SKIP"],
        "signature": ["SKIP"],
        "backend": ["OK"],
    }, stdout
    assert "cannot connect" in stdout and "check server_url" in stdout


def test_a_server_that_is_not_the_portal_fails_reachability(live_server: Any, tmp_path: Path) -> None:
    gw = provision(tmp_path / "gw", live_server.url + "/no-such-prefix")
    code, stdout, statuses = _doctor(gw.config)
    assert code == EXIT_DOCTOR_FAILED
    assert statuses["reachability"] == ["FAIL"], stdout
    assert "HTTP 404" in stdout and "base URL" in stdout


def test_unenrolled_device_fails_signature(live_server: Any, tmp_path: Path, transactional_db: Any) -> None:
    gw = provision(tmp_path / "gw", live_server.url)  # never enrolled
    code, stdout, statuses = _doctor(gw.config)
    assert code == EXIT_DOCTOR_FAILED
    assert statuses["reachability"] == ["OK"] and statuses["signature"] == ["FAIL"], stdout
    assert "[unknown_key]" in stdout and "enrol the device" in stdout


def test_suspended_device_fails_signature(live_server: Any, manufacturer: Any, tmp_path: Path) -> None:
    from devices.services import device_suspend

    gw = provision(tmp_path / "gw", live_server.url)
    device = enrol(manufacturer, gw)
    device_suspend(actor=manufacturer, device=device)
    code, stdout, statuses = _doctor(gw.config)
    assert code == EXIT_DOCTOR_FAILED and statuses["signature"] == ["FAIL"], stdout
    assert "[device_suspended]" in stdout


def test_a_signature_from_a_skewed_clock_is_refused_as_stale(
    live_server: Any, manufacturer: Any, tmp_path: Path
) -> None:
    from agent.config import load_config
    from agent.doctor import _client

    gw = provision(tmp_path / "gw", live_server.url)
    enrol(manufacturer, gw)
    config = load_config(gw.config)
    with _client(config) as client:
        late = check_signature(config, client, clock=lambda: time.time() - 3600)
        fine = check_signature(config, client)
    assert late.status == "FAIL" and "[stale]" in late.message and "clock" in late.fix
    assert fine.status == "OK", fine


class _SkewedPortal(BaseHTTPRequestHandler):
    """Answers like the portal's agent endpoint, with a Date header ten minutes behind."""

    def do_GET(self) -> None:  # noqa: N802
        body = b'{"error": {"code": "method_not_allowed", "message": "Use POST."}}'
        self.send_response_only(405)
        self.send_header("Date", formatdate(time.time() - 600, usegmt=True))
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802
        self.send_response_only(500)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def skewed_server() -> Any:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SkewedPortal)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_clock_skew_warns(skewed_server: str, tmp_path: Path) -> None:
    gw = provision(tmp_path / "gw", skewed_server)
    checks = {c.name: c for c in diagnose(gw.config)}
    clock = checks["clock"]
    assert clock.status == "WARN", clock
    assert "ahead of the portal's" in clock.message and "timedatectl set-ntp" in clock.fix
    assert 595 <= float(clock.message.split(" s ")[0].split()[-1]) <= 601
    # A larger threshold accepts it.
    assert {c.name: c for c in diagnose(gw.config, max_skew=900)}["clock"].status == "OK"


def test_backend_failure_and_a_running_agent(live_server: Any, manufacturer: Any, tmp_path: Path) -> None:
    gw = provision(tmp_path / "gw", live_server.url)
    enrol(manufacturer, gw)
    from agent.config import load_config

    journal = load_config(gw.config).journal
    journal.touch()
    with journal_lock(journal):  # what `agent run` holds while it runs
        code, stdout, statuses = _doctor(gw.config)
        assert code == 0 and statuses["backend"] == ["SKIP"], stdout
        assert "the running agent holds it" in stdout and "pid" in stdout
        second = run_agent("run", "--config", str(gw.config), "--once")
        assert second.returncode == 2 and "another agent is running" in second.stderr
    gw.card.rename(gw.card.with_name("moved.se"))
    code, stdout, statuses = _doctor(gw.config)
    assert code == EXIT_DOCTOR_FAILED and statuses["backend"] == ["FAIL"], stdout
    assert "does not exist" in stdout and "fix:" in stdout


# A token gateway with no CA root pinned: every check passes, the unpinned root only warns.
TOKEN_GATEWAY_OK = {
    "config": ["OK"],
    "token": ["OK"],
    "oce_root": ["WARN"],
    "reachability": ["OK"],
    "clock": ["OK"],
    "signature": ["OK"],  # signed inside the token
    "backend": ["OK"],
}


def _token_gateway(
    live_server: Any, manufacturer: Any, tmp_path: Path, serial: str, label: str, *extra: str
) -> tuple[Any, dict[str, str], Path]:
    """A gateway provisioned with its identity in a fresh SoftHSM token ``label`` (``extra``: more
    ``init`` options) and enrolled; returns it, the environment naming the token and the PIN file."""
    from tests.conftest import service_unavailable
    from tests.support.softhsm import SoftHsm, softhsm_library

    library = softhsm_library()
    if library is None:
        service_unavailable("SoftHSMv2 (softhsm2-util and its module) is not installed")
    assert library is not None
    hsm = SoftHsm.create(library, tmp_path / "hsm")
    hsm.init_token(label)
    env = {"SOFTHSM2_CONF": str(hsm.conf)}
    pin = tmp_path / "token.pin"
    pin.write_text(hsm.pin + "\n")
    pin.chmod(0o600)
    gw = provision(
        tmp_path / "gw", live_server.url, serial,
        "--token-module", library, "--token-label", label, "--token-pin-file", str(pin),
        *extra,
        env=env,
    )  # fmt: skip
    return gw, env, pin


def test_a_token_gateway_passes_and_a_wrong_pin_fails_the_token_check(
    live_server: Any, manufacturer: Any, tmp_path: Path
) -> None:
    gw, env, pin = _token_gateway(live_server, manufacturer, tmp_path, "GW-TOKEN-1", "gw-doctor")
    enrol(manufacturer, gw)
    code, stdout, statuses = _doctor(gw.config, env=env)
    assert code == 0, stdout
    assert statuses == TOKEN_GATEWAY_OK, stdout
    assert f"identity key id {gw.init['key_id']}" in stdout

    pin.write_text("00000000\n")
    code, stdout, statuses = _doctor(gw.config, env=env)
    assert code == EXIT_DOCTOR_FAILED, stdout
    assert statuses["token"] == ["FAIL"] and statuses["signature"] == ["FAIL"], stdout
    assert "PIN" in stdout or "pin" in stdout


def test_a_gateway_whose_token_is_the_key_store_passes(
    live_server: Any, manufacturer: Any, tmp_path: Path
) -> None:
    """``[token]`` with ``backend = "pkcs11:LABEL"`` (no identity_key, no soft SE): the doctor signs
    through the token (agent.config.load_identity) and opens the token backend
    (agent.backends.open_configured_backend)."""
    gw, env, _ = _token_gateway(
        live_server, manufacturer, tmp_path, "GW-TEE-1", "gw-tee", "--backend", "pkcs11:gw-tee"
    )
    assert "identity_key" not in gw.config.read_text()
    enrol(manufacturer, gw)
    code, stdout, statuses = _doctor(gw.config, env=env)
    assert code == 0, stdout
    assert statuses == TOKEN_GATEWAY_OK, stdout
    assert "backend pkcs11" in stdout and "pkcs11: key store" in stdout
    assert f"key id {gw.init['key_id']}" in stdout
