"""The agent's TEE bridge: token operations per second through PKCS#11, and the agent's memory.

``.venv/bin/python -m bench.agent_tee [--seconds S] [--rounds N] [--rss-seconds S]``

1. A fresh SoftHSMv2 token in a temporary directory (its own ``SOFTHSM2_CONF``), opened through the
   agent's token layer (:mod:`agent.pkcs11`, with the OP-TEE profile guard as on a gateway). For
   S seconds each, N interleaved rounds (median reported), next to the same operation done in
   software with ``cryptography`` in the same run:

   - ``sign``: the identity signature of one request (ECDSA P-256 over SHA-256, r‖s):
     :meth:`TokenSigner.sign_raw` (CKM_ECDSA over the digest) vs :func:`agent.httpsig.sign_raw`;
   - ``receive``: one key reception (``gp.tokenwrap``: ECDH1_DERIVE with CKD_NULL, two
     AES_ECB_ENCRYPT_DATA derivations, the AES-CMAC key confirmation, the copy to a token object,
     the session objects destroyed) vs :func:`gp.tokenwrap.receive_in_software`; envelopes are made
     before the timed window;
   - ``session``: one session-key derivation (docs/session-keys.md: one SP 800-108 CMAC round under
     the received master key, in the token) vs :func:`gp.sessionkeys.derive_session_key`.

2. The agent's resident memory while idle-polling a real portal: the portal in its embedded mode
   (``manage.py migrate`` on a temporary SQLite database, then daphne on a free port); the agent
   runs as on a gateway, from a fresh virtualenv holding only its wheel (packaging/agent, with the
   ``pkcs11`` extra) and the dependencies it declares, as on a gateway — not the project's venv,
   whose extra packages a gateway does not have. Two gateways provisioned with ``python -m agent init`` and enrolled through the device
   service — a file identity key with a soft SE (the trial set-up), and a TEE-style gateway: the
   identity key in the SoftHSM token and the token as the key store (``backend = "pkcs11:…"``) —
   each ``python -m agent run`` polling every second. VmRSS from
   ``/proc/<pid>/status`` is sampled every 0.5 s over the window after a warm-up; the exchanges the
   agent logged in the window prove it was polling. Target: under 40 MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TOKEN_LABEL = "bench-tee"
AGENT_TOKEN_LABEL = "bench-agent"  # the polling agent's own token (init generates its keys in it)
RSS_TARGET_MIB = 40.0


def _rate(fn: Callable[[], Any], seconds: float) -> float:
    fn()  # warm
    count, start = 0, time.perf_counter()
    end = start + seconds
    while True:
        fn()
        count += 1
        now = time.perf_counter()
        if now >= end:
            return count / (now - start)


def _vm(pid: int, field: str) -> float:
    """``field`` (VmRSS, VmHWM) of ``pid`` in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


# -- 1. token operations -------------------------------------------------------------------------


def _crypto_ops(token: Any, seconds: float, rounds: int) -> dict[str, tuple[float, float]]:
    from cryptography.hazmat.primitives.asymmetric import ec

    from agent.httpsig import sign_raw
    from gp import tokenwrap
    from gp.sessionkeys import derive_session_key

    token.create_identity(replace=True)
    token.create_receive_key(replace=True)
    signer = token.identity_signer()
    soft_identity = ec.generate_private_key(ec.SECP256R1())
    soft_receive = ec.generate_private_key(ec.SECP256R1())
    token_point = token.receive_public_point()
    message = os.urandom(200)  # a signature base is ~200 bytes

    sd_aid = bytes.fromhex("A000000151535001")
    master = os.urandom(16)
    master_label = tokenwrap.master_key_label(sd_aid, 0x01)
    token.receive_key(tokenwrap.wrap_for_token(master, token_point, master_label), replace=True)
    se_id = token.device_id()
    in_token = token.derive_session_key(sd_aid, service="meter.reading", epoch=20000, kvn=0x01)
    in_software = derive_session_key(master, service="meter.reading", epoch=20000, se_id=se_id)
    assert in_token == in_software, "the token and software session keys differ"

    # Envelopes for the timed receptions, made beforehand (the sender's side is not measured).
    budget = int(seconds * 2000) + 50
    labels = [tokenwrap.master_key_label(sd_aid, kvn) for kvn in range(0x10, 0x14)]
    token_envelopes = [
        tokenwrap.wrap_for_token(os.urandom(16), token_point, labels[i % len(labels)]) for i in range(budget)
    ]
    soft_envelopes = [
        tokenwrap.wrap_for_token(os.urandom(16), soft_receive.public_key(), labels[0]) for _ in range(budget)
    ]
    cursor = {"token": 0, "soft": 0}

    def token_receive() -> None:
        envelope = token_envelopes[cursor["token"] % budget]
        cursor["token"] += 1
        token.receive_key(envelope, replace=True)

    def soft_receive_one() -> None:
        envelope = soft_envelopes[cursor["soft"] % budget]
        cursor["soft"] += 1
        tokenwrap.receive_in_software(soft_receive, envelope)

    epoch = [20000]

    def token_session() -> None:
        epoch[0] += 1
        token.derive_session_key(sd_aid, service="meter.reading", epoch=epoch[0], kvn=0x01)

    def soft_session() -> None:
        epoch[0] += 1
        derive_session_key(master, service="meter.reading", epoch=epoch[0], se_id=se_id)

    pairs = {
        "sign": (lambda: signer.sign_raw(message), lambda: sign_raw(soft_identity, message)),
        "receive": (token_receive, soft_receive_one),
        "session": (token_session, soft_session),
    }
    samples: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in pairs}
    for _ in range(rounds):
        for name, (in_token_fn, in_soft_fn) in pairs.items():
            samples[name][0].append(_rate(in_token_fn, seconds))
            samples[name][1].append(_rate(in_soft_fn, seconds))
    for label in labels:
        token.delete_key(label)
    return {k: (statistics.median(t), statistics.median(s)) for k, (t, s) in samples.items()}


# -- 2. resident memory while idle-polling -------------------------------------------------------


def _manage(env: dict[str, str], *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    if out.returncode:
        raise RuntimeError(f"manage.py {args[0]} failed:\n{out.stdout}\n{out.stderr}")
    return out.stdout


_ENROL = """
from devices.services import device_register
from tenants.access import Actor
from tenants.models import MemberRole, Membership, Organisation, OrgRole, OrgStatus
from django.contrib.auth import get_user_model
import json
org, _ = Organisation.objects.get_or_create(slug="bench-maker", defaults=dict(name="Bench maker",
    roles=[OrgRole.DEVICE_MANUFACTURER], status=OrgStatus.ACTIVE, contact_email="bench@example.test"))
user, _ = get_user_model().objects.get_or_create(username="bench-maker-owner")
Membership.objects.get_or_create(org=org, user=user, defaults=dict(role=MemberRole.OWNER))
actor = Actor(user=user, org=org, member_role=MemberRole.OWNER)
for init in json.loads(INITS):
    device_register(actor=actor, serial=init["serial"], kind="meter",
                    identity_public_key=init["identity_public_key"], key_id=init["key_id"])
print("enrolled")
"""


def _gateway_venv(tmp: Path) -> str:
    """A fresh virtualenv with the agent's wheel and its pkcs11 extra, as on a gateway (no Django,
    none of the portal's packages): packaging/agent built with pip, installed with its dependencies."""
    wheels, venv = tmp / "wheels", tmp / "gateway-venv"
    for args in (
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(wheels),
            str(ROOT / "packaging" / "agent"),
        ],
        [sys.executable, "-m", "venv", "--without-pip", str(venv)],
    ):
        subprocess.run(args, check=True, capture_output=True, timeout=600)
    wheel = next(wheels.glob("tessera_agent-*.whl"))
    python = str(venv / "bin" / "python")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "install", "-q", f"{wheel}[pkcs11]"],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    return python


def _agent_rss(tmp: Path, hsm: Any, seconds: float) -> list[dict[str, Any]]:
    from tests.e2e.conftest import free_port, port_open, stop_process, wait_for

    port = free_port()
    portal_env = {
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": os.environ.get("HOME", str(tmp)),
        "PYTHONPATH": str(ROOT),
        "TESSERA_VAR_DIR": str(tmp / "var"),
        "TESSERA_AGENT_POLL_SECONDS": "1",
        "TESSERA_AGENT_HOLD_MS": "0",
        "LOG_LEVEL": "WARNING",
    }
    (tmp / "var").mkdir()
    _manage(portal_env, "migrate", "--no-input", "-v0")
    base_url = f"http://127.0.0.1:{port}"
    agent_python = _gateway_venv(tmp)
    agent_env = {"PATH": "/usr/bin:/bin", "HOME": portal_env["HOME"], "SOFTHSM2_CONF": str(hsm.conf)}
    pin = tmp / "token.pin"
    pin.write_text(hsm.pin + "\n")
    pin.chmod(0o600)
    gateways = {
        "file key, soft SE": [],
        "token (SoftHSM): identity key, backend pkcs11": [
            "--token-module", hsm.library, "--token-label", AGENT_TOKEN_LABEL, "--token-pin-file", str(pin),
            "--backend", f"pkcs11:{AGENT_TOKEN_LABEL}",
        ],
    }  # fmt: skip
    inits, configs = [], {}
    for i, (name, extra) in enumerate(gateways.items()):
        directory = tmp / f"gw{i}"
        directory.mkdir()
        config = directory / "agent.toml"
        out = subprocess.run(
            [agent_python, "-m", "agent", "init", "--config", str(config), "--server", base_url,
             "--serial", f"BENCH-TEE-{i}", *extra],
            cwd=tmp, env=agent_env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if out.returncode:
            raise RuntimeError(f"agent init failed: {out.stderr}")
        inits.append(json.loads(out.stdout))
        text = (
            config.read_text().replace("min_s = 5.0", "min_s = 1.0").replace("max_s = 3600.0", "max_s = 1.0")
        )
        config.write_text(text)
        configs[name] = config
    _manage(portal_env, "shell", "-c", f"INITS = {json.dumps(json.dumps(inits))}\n" + _ENROL)

    procs: list[subprocess.Popen[Any]] = []
    results = []
    try:
        daphne = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "portal.asgi:application"],
            cwd=ROOT, env=portal_env, stdout=subprocess.DEVNULL, stderr=(tmp / "daphne.log").open("wb"),
        )  # fmt: skip
        procs.append(daphne)
        wait_for(lambda: port_open("127.0.0.1", port), 60, "daphne")
        agents = {}
        for name, config in configs.items():
            log = config.with_name("agent.log")
            proc = subprocess.Popen(
                [agent_python, "-m", "agent", "run", "--config", str(config)],
                cwd=tmp, env=agent_env, stdout=subprocess.DEVNULL, stderr=log.open("wb"),
            )  # fmt: skip
            procs.append(proc)
            agents[name] = (proc, log)
        time.sleep(5.0)  # warm-up: imports, first exchanges, identifiers read
        marks = {name: log.read_text().count("event=exchange ") for name, (_, log) in agents.items()}
        rss: dict[str, list[float]] = {name: [] for name in agents}
        anon: dict[str, list[float]] = {name: [] for name in agents}
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for name, (proc, _) in agents.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"agent '{name}' exited: {agents[name][1].read_text()[-2000:]}")
                rss[name].append(_vm(proc.pid, "VmRSS"))
                anon[name].append(_vm(proc.pid, "RssAnon"))
            time.sleep(0.5)
        for name, (proc, log) in agents.items():
            text = log.read_text()
            exchanges = text.count("event=exchange ") - marks[name]
            refused = text.count("event=exchange_failed")
            results.append(
                {
                    "name": name,
                    "rss_median": statistics.median(rss[name]),
                    "rss_max": max(rss[name]),
                    "hwm": _vm(proc.pid, "VmHWM"),
                    "anon": statistics.median(anon[name]),
                    "exchanges": exchanges,
                    "failed": refused,
                }
            )
    finally:
        for proc in reversed(procs):
            stop_process(proc)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.agent_tee")
    parser.add_argument("--seconds", type=float, default=2.0, help="per operation and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rss-seconds", type=float, default=20.0, help="idle-polling window")
    args = parser.parse_args()

    from tests.support.softhsm import SoftHsm, softhsm_library

    library = softhsm_library()
    if library is None:
        print("bench.agent_tee: SoftHSMv2 is not installed (apt-get install softhsm2)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="bench-agent-tee-") as tmp_name:
        tmp = Path(tmp_name)
        hsm = SoftHsm.create(library, tmp / "hsm")
        hsm.init_token(TOKEN_LABEL)
        hsm.init_token(AGENT_TOKEN_LABEL)
        os.environ["SOFTHSM2_CONF"] = str(hsm.conf)  # read when the module is loaded, below

        from agent.pkcs11.token import open_token

        token = open_token(library, TOKEN_LABEL, pin=hsm.pin)
        try:
            ops = _crypto_ops(token, args.seconds, args.rounds)
        finally:
            token.close()
        load = os.getloadavg()[0]
        print(f"bench.agent_tee: SoftHSMv2 ({library}) through agent.pkcs11 (OP-TEE profile guard on), "
              f"one process, {args.rounds} rounds x {args.seconds:g} s, median; load average {load:.2f}")  # fmt: skip
        labels = {
            "sign": "ECDSA P-256 request signatures",
            "receive": "ECDH key receptions (derive + confirm)",
            "session": "AES-CMAC session-key derivations",
        }
        print(f"  {'operation':40} {'PKCS#11 /s':>11} {'cryptography /s':>16} {'ratio':>7}")
        for key, (in_token, in_soft) in ops.items():
            print(f"  {labels[key]:40} {in_token:11.0f} {in_soft:16.0f} {in_token / in_soft:7.2f}")

        results = _agent_rss(tmp, hsm, args.rss_seconds)
        print(f"  agent resident memory while idle-polling the portal every 1 s ({args.rss_seconds:g} s window, "
              f"target < {RSS_TARGET_MIB:g} MiB):")  # fmt: skip
        worst = 0.0
        for r in results:
            worst = max(worst, r["rss_max"])
            print(f"    {r['name']:52} VmRSS median {r['rss_median']:5.1f} MiB (anonymous {r['anon']:4.1f}), "
                  f"max {r['rss_max']:5.1f} MiB, VmHWM {r['hwm']:5.1f} MiB; "
                  f"{r['exchanges']} exchanges, {r['failed']} failed")  # fmt: skip
            if r["exchanges"] < args.rss_seconds / 2 or r["failed"]:
                print(f"    ! agent '{r['name']}' was not polling normally")
                return 1
        print(f"  -> {'PASS' if worst < RSS_TARGET_MIB else 'FAIL'} (largest VmRSS {worst:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
