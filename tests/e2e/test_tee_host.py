"""A TEE-backed gateway through real processes (issue #7 item 2): ``python -m agent`` with its keys
in a PKCS#11 token (a fresh SoftHSMv2 per run, behind the OP-TEE profile), daphne, a Celery worker
and beat. create SD → load keys (portal-held at creation, then the provider's confidential
envelope) → derive (the agent's local API against the portal's session-keys API and the provider's
own derivation) → rotate → delete, the agent stopped and started again between every step; the
records and the token agree after each one. Per-operation timings come from the agent's log."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, Stack, stop_process, wait_for
from tests.support.softhsm import SoftHsm, softhsm_library

pytestmark = [pytest.mark.e2e, pytest.mark.services]

LABEL = "tee-e2e"
AID = "A0000001515350EE01"
TSM = {"on_behalf_of": "sei"}


def _local_key(sock: Path, service: str, epoch: int) -> tuple[int, dict]:
    body = json.dumps({"sd": AID, "service": service, "epoch": epoch}).encode()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(str(sock))
    s.sendall(
        f"POST /session-key HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])


def _token_labels(hsm: SoftHsm) -> list[str]:
    """The SD keys in the token, read by a separate process (the agent is stopped then)."""
    code = (
        "import json,sys\nfrom agent.pkcs11.token import open_token\n"
        f"t=open_token({hsm.library!r},{LABEL!r},pin={hsm.pin!r})\n"
        "print(json.dumps([k.label for k in t.list_keys('tessera/sd/')]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "SOFTHSM2_CONF": str(hsm.conf), "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_a_tee_hosts_security_domains_like_an_se(stack: Stack, tmp_path: Path) -> None:
    library = softhsm_library()
    if library is None:
        pytest.skip("SoftHSMv2 is not installed (apt-get install softhsm2)")
    t0 = time.monotonic()
    hsm = SoftHsm.create(library, tmp_path / "softhsm")
    hsm.init_token(LABEL)
    pin = tmp_path / "token.pin"
    pin.write_text(hsm.pin + "\n")
    pin.chmod(0o600)
    env = {"SOFTHSM2_CONF": str(hsm.conf)}
    config = tmp_path / "agent.toml"
    out = subprocess.run(
        [sys.executable, "-m", "agent", "init", "--config", str(config), "--server", stack.base_url,
         "--serial", "GW-TEE-E2E", "--token-module", library, "--token-label", LABEL,
         "--token-pin-file", str(pin), "--backend", f"pkcs11:{LABEL}"],
        cwd=ROOT, env={**stack.env, **env}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    init = json.loads(out.stdout)
    stack._fast_polls(config)
    sock = tmp_path / "agent.sock"
    with config.open("a") as f:  # the local API for an on-device application running as this uid
        f.write(
            f'\n[localapi]\nsocket = "{sock}"\n\n[[localapi.apps]]\nname = "meter"\nuid = {os.getuid()}\n'
            f'sd = "{AID}"\nservices = ["meter.reading"]\n'
        )

    # enrolment: the device by its manufacturer, the TEE by its issuer with the token's receive key
    # (registered as the CASD key is for an SE: the CA certifies it)
    with stack.api("sei") as c:
        r = c.post(
            "/orgs/sei/devices/",
            json={"serial": "GW-TEE-E2E", "kind": "medical_gateway", "identity_public_key": init["identity_public_key"],
                  "key_id": init["key_id"], "se_issuer": "sei", "se_serial": init["se"]["serial"]},
        )  # fmt: skip
        assert r.status_code == 201, r.text
        device_id = r.json()["id"]
        r = c.post(
            "/orgs/sei/secure-elements/",
            json={"serial": init["se"]["serial"], "kind": "tee", "isd_aid": "A000000151000000",
                  # a TEE has no ISD key set (docs/tee-bridge.md §8.1)
                  "casd_public_key": init["receive_public_key"],
                  "device": {"manufacturer": "sei", "serial": "GW-TEE-E2E"}},
        )  # fmt: skip
        assert r.status_code == 201, r.text
        assert r.json()["kind"] == "tee"
        assert r.json()["isd"]["key_sets"] == []  # no ISD key set in the issuer's vault
        assert r.json()["casd"]["state"] == "certified", r.json()  # the CA certified the receive key
    enrolled = time.monotonic()

    runs: list[str] = []
    durations: dict[str, float] = {}

    def step(name: str, user: str, org: str, kind: str, params: dict, **kw: str) -> dict:
        """One job with a freshly started agent, stopped again afterwards (SIGTERM)."""
        n = len(runs) + 1
        proc = stack.spawn(
            f"agent-tee-{n}", [sys.executable, "-m", "agent", "run", "--config", str(config)], env=env
        )
        runs.append(f"agent-tee-{n}")
        started = time.monotonic()
        job = stack.request_job(user, org, device_id, kind, params, **kw)
        done = stack.wait_job(user, org, job["id"], timeout=60, **kw)
        durations[name] = time.monotonic() - started
        assert done["state"] == "succeeded", (done, stack.log(f"agent-tee-{n}"), stack.log("worker"))
        if name in ("create", "confidential", "rotate"):
            wait_for(lambda: sock.exists(), 10, "the local API socket")
        result = done
        result["_proc"] = proc
        return result

    def stop(job: dict) -> None:
        stop_process(job.pop("_proc"))

    # 1. create the SD for the provider (TSM for the issuer): a portal-held key, generated by the worker
    job = step("create", "tsm", "tsm", "create_security_domain", {"aid": AID, "owner": "provider"}, **TSM)
    sd_id = stack.query(
        f"from devices.models import SecurityDomain\nout=str(SecurityDomain.objects.get(aid='{AID}').pk)"
    )
    # derive while this agent runs: the local API's key equals the portal's for the portal-held key
    status, local = _local_key(sock, "meter.reading", 100)
    assert status == 200, local
    with stack.api("provider") as c:
        r = c.post(
            f"/orgs/provider/security-domains/{sd_id}/session-keys/",
            json={"service": "meter.reading", "epoch": 100},
        )
    assert r.status_code == 200, r.text
    assert r.json()["key"] == local["key"]
    stop(job)
    assert _token_labels(hsm) == [f"tessera/sd/{AID}/30"]

    # 2. load keys confidentially: the provider's own envelope to the token's registered receive key
    sys.path.insert(0, str(ROOT))
    from agent.tokenops import key_check_value, sign_envelope
    from gp import tokenwrap
    from gp.sessionkeys import derive_session_key
    from tests.support.ca import make_csr

    oce_key, csr = make_csr(common_name="provider OCE")
    with stack.api("provider") as c:  # the provider's OCE certificate from the CA
        r = c.post("/orgs/provider/certificates/csr/", json={"csr": csr})
    assert r.status_code == 201, r.text
    chain = [r.json()["gp_hex"]]
    provider_key = os.urandom(32)
    envelope = tokenwrap.wrap_for_token(
        provider_key, bytes.fromhex(init["receive_public_key"]), tokenwrap.master_key_label(AID, 0x40)
    )
    signature = sign_envelope(oce_key, envelope, bytes.fromhex(init["se"]["serial"]))
    job = step(
        "confidential", "provider", "provider", "load_keys_confidential",
        {"sd": AID, "envelope": envelope.to_json(), "kcv": key_check_value(provider_key),
         "certificates": chain, "signature": signature},
    )  # fmt: skip
    status, local = _local_key(sock, "meter.reading", 101)
    assert status == 200, local
    se_id = bytes.fromhex(init["se"]["serial"])
    assert (
        local["key"]
        == derive_session_key(provider_key, service="meter.reading", epoch=101, se_id=se_id).hex().upper()
    )
    with stack.api("provider") as c:  # Tessera never held it
        r = c.post(
            f"/orgs/provider/security-domains/{sd_id}/session-keys/",
            json={"service": "meter.reading", "epoch": 101},
        )
    assert r.status_code == 409, r.text
    stop(job)
    assert _token_labels(hsm) == [f"tessera/sd/{AID}/40"]

    # 3. rotate (the provider, to a portal-held AES-256 key of the next version)
    job = step("rotate", "provider", "provider", "rotate_keys", {"sd": AID, "key_length": 32})
    status, local = _local_key(sock, "meter.reading", 102)
    with stack.api("provider") as c:
        r = c.post(
            f"/orgs/provider/security-domains/{sd_id}/session-keys/",
            json={"service": "meter.reading", "epoch": 102},
        )
    assert status == 200 and r.status_code == 200 and r.json()["key"] == local["key"]
    stop(job)
    assert _token_labels(hsm) == [f"tessera/sd/{AID}/41"]

    # 4. read status (the issuer): the records match the token
    job = step("read_status", "sei", "sei", "read_status", {})
    stop(job)
    keys = stack.query(
        "from keys.models import ServiceMasterKey\n"
        f"out=[[m.kvn, m.custody, m.key_length] for m in ServiceMasterKey.objects.filter(security_domain__aid='{AID}', status='active')]"
    )
    assert keys == [[0x41, "portal", 32]]

    # 5. delete (TSM for the issuer)
    job = step("delete", "tsm", "tsm", "delete_security_domain", {"aid": AID}, **TSM)
    stop(job)
    assert _token_labels(hsm) == []
    assert (
        stack.query(
            f"from devices.models import SecurityDomain\nout=SecurityDomain.objects.filter(aid='{AID}').count()"
        )
        == 0
    )

    # the provider's key (and its AES schedule) is nowhere Tessera keeps or moves data: the database,
    # Redis (and every command it received), the logs of every process, including the agents'
    _assert_blind(stack, provider_key)

    # figures: per-operation timings from the agents' logs, and the duration of each step
    timings: dict[str, list[float]] = {}
    for name in runs:
        for op, ms in re.findall(r"event=token_op .*? op=(\w+) outcome=\w+ ms=([\d.]+)", stack.log(name)):
            timings.setdefault(op, []).append(float(ms))
    assert set(timings) == {"receive_key", "delete_key", "list", "delete_sd"}
    figures = {
        "ops_ms": {op: round(max(v), 1) for op, v in timings.items()},
        "steps_s": {k: round(v, 2) for k, v in durations.items()},
        "enrolment_s": round(enrolled - t0, 2),
        "total_s": round(time.monotonic() - t0, 2),
    }
    print("TEE-E2E-FIGURES", json.dumps(figures))
    (stack.tmp / "tee-e2e-figures.json").write_text(json.dumps(figures))


def _assert_blind(stack: Stack, key: bytes) -> None:
    """tests/e2e/blindness.py over the stack, with a planted marker proving the search finds what is there."""
    import psycopg

    from tests.e2e import blindness as B
    from tests.e2e.conftest import PG_HOST, PG_PORT

    marker = os.urandom(16)
    with psycopg.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname=stack.db_name) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS tee_blindness_canary (b bytea)")
        conn.execute("INSERT INTO tee_blindness_canary VALUES (%s)", (marker,))
    port = int(stack.redis_url.rsplit(":", 1)[1].split("/")[0])
    monitor = stack.tmp / "redis-monitor.log"
    sources: dict[str, bytes] = {}
    sources.update(B.pg_sources(db_name=stack.db_name, host=PG_HOST, port=PG_PORT))
    sources.update(B.redis_sources(port=port, directory=stack.tmp))
    sources.update(B.monitor_source(monitor))
    sources.update(B.file_sources([p for p in stack.tmp.glob("*.log") if p != monitor]))
    assert any(n.endswith("worker.log") for n in sources) and any("agent-tee-" in n for n in sources)
    try:
        assert B.search([B.Secret("marker", marker)], sources), "the search finds nothing at all"
        leaks = B.search(B.key_secrets("provider key", key), sources)
        assert leaks == [], "\n".join(map(str, leaks))
    finally:
        with psycopg.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname=stack.db_name) as conn:
            conn.execute("DROP TABLE tee_blindness_canary")
