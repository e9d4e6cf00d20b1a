"""The agent's local API on a real Unix socket in front of a soft card (agent/localapi.py), its
configuration, the demo meter end to end, and `python -m agent run` serving it."""

from __future__ import annotations

import grp
import json
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from agent.backends.soft import SoftBackend
from agent.config import AgentConfig, LocalApiApp, LocalApiSettings, load_config, write_config
from agent.demo_meter import (
    Reading,
    ReadingRejected,
    SessionKeyUnavailable,
    local_session_key,
    provider_verify,
    sign_reading,
)
from agent.errors import ConfigError
from agent.localapi import CardAccess, LocalApiServer
from gp.card import SoftCard
from gp.commands import (
    AID,
    ClearKey,
    InstallForInstall,
    InstallForPersonalization,
    InstallParameters,
    KeyType,
    Privileges,
    PutKey,
)
from gp.scp03 import HostSession
from gp.sessionkeys import MASTER_KEY_KVN, derive_session_key
from tests.gp.cardkit import ISD_KEYS, SSD, SSD_KEYS, Terminal

ROOT = Path(__file__).resolve().parents[2]
SD_ELF, SD_MODULE = AID("A0000001515350"), AID("A000000151535041")
OTHER_SSD = AID("A000000151535099")
MASTER = bytes(range(0xA0, 0xB0))
SE_ID = bytes.fromhex("C0FFEE01")  # tests/agent/conftest.py card_path
SERVICE = "meter.reading"
EPOCH = 20419


def _provision(card_path: str) -> None:
    """Two SSDs; the first with its owner's SCP03 keys and a service master key (KVN 72)."""
    card = SoftCard.open(card_path)
    isd = Terminal(card).open()
    for aid in (SSD, OTHER_SSD):
        isd.ok(
            InstallForInstall(
                SD_ELF,
                SD_MODULE,
                aid,
                Privileges.SECURITY_DOMAIN,
                InstallParameters(bytes.fromhex("81020370")),
            ).to_apdu()
        )
    isd.ok(InstallForPersonalization(SSD).to_apdu())
    keys = tuple(ClearKey(KeyType.AES, k) for k in (SSD_KEYS.enc, SSD_KEYS.mac, SSD_KEYS.dek))
    isd.ok(PutKey(0x30, keys).to_apdu(dek=ISD_KEYS.dek))
    Terminal(card).open(SSD_KEYS, aid=SSD).ok(
        PutKey(MASTER_KEY_KVN, (ClearKey(KeyType.AES, MASTER),)).to_apdu(dek=SSD_KEYS.dek)
    )
    card.close()


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="tla", dir="/tmp"))  # short: a socket path has 108 bytes at most
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _settings(sock_dir: Path, *apps: LocalApiApp, group: str | None = None) -> LocalApiSettings:
    return LocalApiSettings(sock_dir / "agent.sock", group, apps)


ME = LocalApiApp("meter", os.getuid(), bytes(SSD).hex().upper(), frozenset({SERVICE}))


@pytest.fixture
def access(card_path: str) -> Iterator[CardAccess]:
    _provision(card_path)
    a = CardAccess(SoftBackend(card_path))
    yield a
    a.close()


@pytest.fixture
def server(sock_dir: Path, access: CardAccess) -> Iterator[LocalApiServer]:
    own_group = grp.getgrgid(os.getgid()).gr_name
    with LocalApiServer(_settings(sock_dir, ME, group=own_group), access) as s:
        yield s


def _post(
    path: Path, body: bytes | str, *, target: str = "/session-key", method: str = "POST"
) -> tuple[int, dict]:
    raw = body.encode() if isinstance(body, str) else body
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(str(path))
    head = f"{method} {target} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(raw)}\r\n\r\n"
    s.sendall(head.encode() + raw)
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    status_line, _, rest = data.partition(b"\r\n")
    _, _, body_out = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), json.loads(body_out)


def _ask(path: Path, **fields: object) -> tuple[int, dict]:
    return _post(path, json.dumps({"sd": bytes(SSD).hex(), "service": SERVICE, "epoch": EPOCH} | fields))


# --- the socket ---------------------------------------------------------------------------------------


def test_a_granted_application_gets_the_key_the_se_derives(server, caplog):
    caplog.set_level(logging.DEBUG, logger="agent")
    status, body = _ask(server.path)
    expected = derive_session_key(MASTER, service=SERVICE, epoch=EPOCH, se_id=SE_ID)
    assert status == 200
    assert body == {
        "sd": bytes(SSD).hex().upper(),
        "service": SERVICE,
        "epoch": EPOCH,
        "key": expected.hex().upper(),
    }
    # the log says who asked for what, never the key
    assert "event=session_key app=meter" in caplog.text and "outcome=ok" in caplog.text
    assert expected.hex().upper() not in caplog.text.upper() and MASTER.hex() not in caplog.text.lower()


def test_the_socket_is_a_socket_with_mode_0660_and_the_configured_group(server):
    st = server.path.lstat()
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660
    assert st.st_gid == os.getgid()


@pytest.mark.parametrize(
    ("fields", "status", "code"),
    [
        ({"service": "billing"}, 403, "not_permitted"),
        ({"sd": bytes(OTHER_SSD).hex()}, 403, "not_permitted"),
        ({"service": "Bad Name"}, 400, "invalid_service"),
        ({"epoch": -1}, 400, "invalid_epoch"),
        ({"epoch": "1"}, 400, "invalid_epoch"),
        ({"sd": "A0"}, 400, "invalid_sd"),
        ({"sd": "zz" * 6}, 400, "invalid_sd"),
        ({"extra": 1}, 400, "unknown_field"),
    ],
)
def test_bad_or_ungranted_requests_get_a_clear_error(server, fields, status, code):
    got, body = _ask(server.path, **fields)
    assert (got, body["error"]["code"]) == (status, code)
    assert "Traceback" not in body["error"]["message"]


@pytest.mark.parametrize(
    ("body", "target", "method", "status", "code"),
    [
        (b"not json", "/session-key", "POST", 400, "invalid_json"),
        (b"[1]", "/session-key", "POST", 400, "invalid_json"),
        (b"\xff\xfe", "/session-key", "POST", 400, "invalid_json"),
        (b"x" * 2000, "/session-key", "POST", 413, "too_large"),
        (b"{}", "/other", "POST", 404, "not_found"),
        (b"", "/session-key", "GET", 405, "method_not_allowed"),
    ],
)
def test_malformed_http_gets_a_clear_error(server, body, target, method, status, code):
    got, out = _post(server.path, body, target=target, method=method)
    assert (got, out["error"]["code"]) == (status, code)


def test_an_unknown_uid_is_refused(sock_dir, access):
    stranger = replace(ME, uid=os.getuid() + 1)
    with LocalApiServer(_settings(sock_dir, stranger), access) as s:
        status, body = _ask(s.path)
    assert (status, body["error"]["code"]) == (403, "unknown_application")


def test_an_sd_without_a_master_key_or_absent_is_404(sock_dir, access):
    apps = (replace(ME, sd=bytes(OTHER_SSD).hex().upper()),)
    with LocalApiServer(_settings(sock_dir, *apps), access) as s:
        status, body = _ask(s.path, sd=bytes(OTHER_SSD).hex())
        assert (status, body["error"]["code"]) == (404, "no_master_key")
    with LocalApiServer(_settings(sock_dir, replace(ME, sd="A000000151535077")), access) as s:
        status, body = _ask(s.path, sd="A000000151535077")
        assert (status, body["error"]["code"]) == (404, "sd_not_found")


def test_a_closed_card_is_503_and_the_server_keeps_serving(server, access):
    access.backend.close()
    status, body = _ask(server.path)
    assert (status, body["error"]["code"]) == (503, "card_unavailable")
    status, body = _ask(server.path)
    assert status == 503


def test_a_local_request_between_two_apdus_of_a_job_leaves_its_session_intact(server, access):
    # given the runner in the middle of a job: INITIALIZE UPDATE sent on channel 0, no EXTERNAL AUTH yet
    assert access.transmit(bytes.fromhex("00A4040000"))[-2:] == b"\x90\x00"
    host = HostSession(ISD_KEYS, security_level=0x33, host_challenge=os.urandom(8), key_version=0)
    rsp = access.transmit(host.initialize_update())
    assert rsp[-2:] == b"\x90\x00"
    # when a local application asks for a key
    assert _ask(server.path)[0] == 200
    # then the job's session still opens and works on channel 0, and no channel was left open
    assert access.transmit(host.external_authenticate(rsp[:-2]))[-2:] == b"\x90\x00"
    get_status = host.wrap(bytes.fromhex("80F28002024F0000"))
    assert host.unwrap(access.transmit(get_status))[-2:] == b"\x90\x00"
    assert access.transmit(bytes.fromhex("0070800100"))[-2:] == b"\x6a\x86"  # channel 1 is closed


def test_concurrent_requests_are_serialised_on_the_card(server):
    results: list[int] = []

    def ask() -> None:
        results.append(_ask(server.path)[0])

    threads = [threading.Thread(target=ask) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 32


def test_a_stale_socket_is_replaced_but_another_file_is_never_removed(sock_dir, access):
    path = sock_dir / "agent.sock"
    path.write_text("precious")
    with pytest.raises(ConfigError, match="not a socket"):
        LocalApiServer(_settings(sock_dir, ME), access).start()
    assert path.read_text() == "precious"
    path.unlink()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()
    with LocalApiServer(_settings(sock_dir, ME), access) as s:
        assert _ask(s.path)[0] == 200
    assert not path.exists()


def test_an_unknown_group_is_a_config_error(sock_dir, access):
    with pytest.raises(ConfigError, match="no group"):
        LocalApiServer(_settings(sock_dir, ME, group="no-such-group-xyz"), access).start()


# --- the demo meter -----------------------------------------------------------------------------------


def test_the_demo_meter_reading_verifies_on_the_provider_side_and_forgeries_do_not(server):
    # the meter: today's key from the local API, a tagged reading
    key = local_session_key(str(server.path), sd=bytes(SSD).hex(), service=SERVICE, epoch=EPOCH)
    signed = sign_reading(key, Reading("meter-1", 7, EPOCH, 1234))
    # the provider: its master key, the SE's id, the same day
    assert provider_verify(MASTER, se_id=SE_ID, signed=signed, today=EPOCH) == Reading(
        "meter-1", 7, EPOCH, 1234
    )
    tampered = json.loads(json.dumps(signed))
    tampered["reading"]["wh"] = 1
    for bad, kwargs in (
        (tampered, {"se_id": SE_ID, "today": EPOCH}),
        (signed, {"se_id": SE_ID, "today": EPOCH + 1}),  # another day's key
        (signed, {"se_id": bytes.fromhex("C0FFEE02"), "today": EPOCH}),  # another SE
        ({"reading": signed["reading"]}, {"se_id": SE_ID, "today": EPOCH}),
        ({"reading": "x", "tag": "00"}, {"se_id": SE_ID, "today": EPOCH}),
    ):
        with pytest.raises(ReadingRejected):
            provider_verify(MASTER, signed=bad, **kwargs)
    with pytest.raises(ReadingRejected):
        provider_verify(bytes(16), se_id=SE_ID, signed=signed, today=EPOCH)


def test_the_demo_meter_reports_a_refusal_by_its_code(server):
    with pytest.raises(SessionKeyUnavailable) as e:
        local_session_key(str(server.path), sd=bytes(SSD).hex(), service="other", epoch=EPOCH)
    assert e.value.code == "not_permitted"
    with pytest.raises(SessionKeyUnavailable) as e:
        local_session_key(
            str(server.path.with_name("none.sock")), sd=bytes(SSD).hex(), service=SERVICE, epoch=1
        )
    assert e.value.code == "unreachable"


# --- configuration ------------------------------------------------------------------------------------


def _write(config: AgentConfig, tmp_path: Path, extra: str) -> Path:
    path = write_config(tmp_path / "agent.toml", config)
    path.write_text(path.read_text() + extra)
    return path


def test_the_localapi_table_loads(config, tmp_path, sock_dir):
    path = _write(
        config,
        tmp_path,
        f'\n[localapi]\nsocket = "{sock_dir}/a.sock"\ngroup = "adm"\n\n'
        '[[localapi.apps]]\nname = "meter"\nuid = 1001\nsd = "a000000151535001"\nservices = ["meter.reading"]\n',
    )
    loaded = load_config(path).localapi
    assert loaded == LocalApiSettings(
        sock_dir / "a.sock", "adm", (LocalApiApp("meter", 1001, "A000000151535001", frozenset({SERVICE})),)
    )
    assert loaded.app_for(1001) is loaded.apps[0] and loaded.app_for(0) is None


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("[localapi]\n", "localapi.socket: missing"),
        ('[localapi]\nsocket = "/nonexistent-dir/a.sock"\n', "does not exist"),
        ('[localapi]\nsocket = "/tmp/a.sock"\nmode = 1\n', "unknown key"),
        ('[localapi]\nsocket = "/tmp/a.sock"\n[[localapi.apps]]\nname = "m"\n', "missing"),
        (
            '[localapi]\nsocket = "/tmp/a.sock"\n[[localapi.apps]]\nname = "m"\nuid = -1\nsd = "A000000151"\n'
            'services = ["s"]\n',
            "uid",
        ),
        (
            '[localapi]\nsocket = "/tmp/a.sock"\n[[localapi.apps]]\nname = "m"\nuid = 5\nsd = "A0"\nservices = ["s"]\n',
            "AID",
        ),
        (
            '[localapi]\nsocket = "/tmp/a.sock"\n[[localapi.apps]]\nname = "m"\nuid = 5\nsd = "A000000151"\n'
            'services = ["Bad Name"]\n',
            "services",
        ),
        (
            '[localapi]\nsocket = "/tmp/a.sock"\n[[localapi.apps]]\nname = "m"\nuid = 5\nsd = "A000000151"\n'
            'services = ["s"]\n[[localapi.apps]]\nname = "n"\nuid = 5\nsd = "A000000151"\nservices = ["s"]\n',
            "already",
        ),
    ],
)
def test_a_bad_localapi_table_is_a_config_error_naming_the_key(config, tmp_path, table, message):
    with pytest.raises(ConfigError, match=message):
        load_config(_write(config, tmp_path, "\n" + table))


# --- python -m agent run --------------------------------------------------------------------------------


def test_agent_run_serves_the_local_api_and_removes_the_socket_on_sigterm(
    config, tmp_path, sock_dir, card_path
):
    _provision(card_path)
    sock = sock_dir / "agent.sock"
    path = _write(
        config,
        tmp_path,
        f'\n[localapi]\nsocket = "{sock}"\n\n[[localapi.apps]]\nname = "meter"\nuid = {os.getuid()}\n'
        f'sd = "{bytes(SSD).hex()}"\nservices = ["{SERVICE}"]\n',
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--config", str(path)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not sock.exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the local API socket did not appear"
            time.sleep(0.05)
        key = local_session_key(str(sock), sd=bytes(SSD).hex(), service=SERVICE, epoch=EPOCH)
        assert key == derive_session_key(MASTER, service=SERVICE, epoch=EPOCH, se_id=SE_ID)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert not sock.exists()
    assert key.hex().upper() not in err.upper() and "Traceback" not in err
