"""What a story runs on: the narrator, the stakeholders' API clients, fresh gateways with real
agent processes, the providers' own tooling (``python -m sdk``), and the final checks."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from django.conf import settings

TERMINAL = ("succeeded", "failed", "rejected", "timed_out", "canceled", "expired")
SWITCH_FINAL = ("completed", "rolled_back", "failed")
# The gateways long-poll (as run_demo's): a job starts the moment it is compiled. Shorter than the
# demo's 20 s so that a stopped agent ends its held exchange (and exits) within seconds.
AGENT_WAIT_S = 5.0
DEMO_LOAD_FILE = "F0544553534D01"  # jobs.compiler.demo_app.DEMO_LOAD_FILE_AID
DEMO_MODULE = "F0544553534D0101"


class StoryFailed(Exception):
    """A step did not end as the story needs: the story stops here (exit status 2)."""


@dataclass
class Check:
    stakeholder: str
    expectation: str
    passed: bool
    detail: str = ""


@dataclass
class Gateway:
    serial: str
    directory: Path
    config: Path
    card_path: Path
    device_id: str = ""
    process: subprocess.Popen[bytes] | None = None


@dataclass
class Runtime:
    """One run of one story against the portal at ``server``."""

    story: str
    server: str
    emit: Callable[[str], None]
    workdir: Path = field(default_factory=Path)
    checks: list[Check] = field(default_factory=list)
    gateways: list[Gateway] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    _tokens: dict[str, str] = field(default_factory=dict)
    steps: int = 0

    # -- narrative ---------------------------------------------------------------------------

    def say(self, text: str) -> None:
        self.emit(f"[{time.monotonic() - self.started:6.1f}s] {text}")

    @contextmanager
    def step(self, text: str) -> Iterator[dict[str, str]]:
        """One step of the story: ``outcome["text"]`` (set by the body) is printed with it."""
        self.steps += 1
        outcome = {"text": "done"}
        t0 = time.monotonic()
        try:
            yield outcome
        except StoryFailed as exc:
            self.say(f"{self.steps:>2}. {text} — FAILED: {exc}")
            raise
        self.say(f"{self.steps:>2}. {text} — {outcome['text']} ({time.monotonic() - t0:.1f}s)")

    def check(self, stakeholder: str, expectation: str, passed: bool, detail: str = "") -> bool:
        self.checks.append(Check(stakeholder, expectation, bool(passed), detail))
        mark = "PASS" if passed else "FAIL"
        self.say(
            f"check [{mark}] {stakeholder}: {expectation}" + (f" ({detail})" if detail and not passed else "")
        )
        return bool(passed)

    @property
    def failed_checks(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    # -- the stakeholders' API ---------------------------------------------------------------

    def token(self, slug: str) -> str:
        """The API token of the demo organisation's user (username = its short name, seed_demo)."""
        if slug not in self._tokens:
            from django.contrib.auth import get_user_model
            from rest_framework.authtoken.models import Token

            user = get_user_model().objects.filter(username=slug).first()
            if user is None:
                raise StoryFailed(f"no demo user {slug!r}: run `manage.py seed_demo` first")
            self._tokens[slug] = Token.objects.get_or_create(user=user)[0].key
        return self._tokens[slug]

    def api(self, slug: str) -> httpx.Client:
        return httpx.Client(
            base_url=f"{self.server}/api/v1",
            headers={"Authorization": f"Token {self.token(slug)}", "Accept": "application/json"},
            timeout=30,
        )

    def call(
        self, slug: str, method: str, path: str, *, expect: tuple[int, ...] = (200, 201), **kw: Any
    ) -> Any:
        with self.api(slug) as c:
            r = c.request(method, path, **kw)
        if r.status_code not in expect:
            raise StoryFailed(f"{slug}: {method} {path} answered {r.status_code}: {r.text[:300]}")
        return r.json() if r.content else {}

    def request_job(
        self, slug: str, gw: Gateway, kind: str, params: dict[str, Any], on_behalf_of: str | None = None
    ) -> dict[str, Any]:
        query = {"on_behalf_of": on_behalf_of} if on_behalf_of else {}
        return self.call(
            slug,
            "POST",
            f"/orgs/{slug}/devices/{gw.device_id}/jobs/",
            params=query,
            json={"kind": kind, "params": params},
            expect=(201,),
        )

    def wait_job(
        self,
        slug: str,
        job_id: str,
        *,
        on_behalf_of: str | None = None,
        states: tuple[str, ...] = TERMINAL,
        timeout: float = 60,
    ) -> dict[str, Any]:
        query = {"on_behalf_of": on_behalf_of} if on_behalf_of else {}
        deadline = time.monotonic() + timeout
        while True:
            job = self.call(slug, "GET", f"/orgs/{slug}/jobs/{job_id}/", params=query)
            if job["state"] in states:
                return job
            if time.monotonic() > deadline:
                raise StoryFailed(f"job {job['kind']} still {job['state']} after {timeout:.0f}s")
            time.sleep(0.25)

    def run_job(
        self, slug: str, gw: Gateway, kind: str, params: dict[str, Any], on_behalf_of: str | None = None
    ) -> dict[str, Any]:
        """Request a job as ``slug`` and wait until it succeeded (else the story fails)."""
        job = self.request_job(slug, gw, kind, params, on_behalf_of)
        done = self.wait_job(slug, job["id"], on_behalf_of=on_behalf_of)
        if done["state"] != "succeeded":
            raise StoryFailed(f"{kind} ended {done['state']} ({done.get('error_code') or ''})")
        return done

    def wait_switch(self, slug: str, switch_id: str, *, timeout: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            sw = self.call(slug, "GET", f"/orgs/{slug}/switches/{switch_id}/")
            if sw["state"] in SWITCH_FINAL:
                return sw
            if time.monotonic() > deadline:
                raise StoryFailed(f"switch still {sw['state']} at step {sw.get('step')} after {timeout:.0f}s")
            time.sleep(0.3)

    def wait_for(self, what: str, predicate: Callable[[], Any], timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise StoryFailed(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(0.3)

    # -- gateways ----------------------------------------------------------------------------

    def serial(self, prefix: str) -> str:
        return f"{prefix}-{secrets.token_hex(3).upper()}"

    def gateway(self, *, prefix: str, kind: str, maker: str, issuer: str, subscriber: str | None) -> Gateway:
        """A fresh device with a soft SE: ``agent init``, then registered by its manufacturer and
        its SE issuer and the ISD keys imported into the issuer's vault (enrol_gateway), then its
        agent started."""
        serial = self.serial(prefix)
        directory = self.workdir / serial
        gw = Gateway(
            serial=serial,
            directory=directory,
            config=directory / "agent.toml",
            card_path=directory / "card.se",
        )
        gw.device_id = str(
            enrol_gateway(
                serial=serial,
                directory=directory,
                server=self.server,
                kind=kind,
                maker=maker,
                issuer=issuer,
                subscriber=subscriber,
            ).pk
        )
        self.gateways.append(gw)
        self.start_agent(gw)
        return gw

    def start_agent(self, gw: Gateway) -> None:
        log = (gw.directory / "agent.log").open("ab")
        gw.process = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--config", str(gw.config)],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=settings.BASE_DIR,
        )
        log.close()

    def stop_agent(self, gw: Gateway) -> None:
        proc = gw.process
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def stop_all(self) -> None:
        for gw in self.gateways:
            self.stop_agent(gw)

    def card(self, gw: Gateway) -> Any:
        """The card's own registry (applications, SDs, key versions, personalisation), read from
        the soft SE's state file. The agent must be stopped (it owns the file while it runs)."""
        from gp.card import SoftCard

        if gw.process is not None and gw.process.poll() is None:
            raise StoryFailed(f"the agent of {gw.serial} still runs: stop it before reading its card")
        return SoftCard.open(str(gw.card_path)).registry

    # -- a provider's own tooling ------------------------------------------------------------

    def tooling(self, org: str) -> ProviderTooling:
        from keys.ca import ca_lookup

        return ProviderTooling(
            server=self.server,
            org=org,
            token=self.token(org),
            store=self.workdir / f"{org}-store",
            ca_id=str(ca_lookup().pk),  # the deployment's CA (TESSERA_CA where there are several)
        )


ISD_AID = "A000000151000000"


def card_sds(registry: Any) -> dict[str, Any]:
    """Supplementary SDs on the card (the ISD excluded): AID → registry entry."""
    out = {}
    for e in registry.applications:
        aid = bytes(e.aid).hex().upper()
        if e.privileges is not None and e.privileges.is_security_domain and aid != ISD_AID:
            out[aid] = e
    return out


def card_apps(registry: Any) -> dict[str, str]:
    """Applications that are not SDs: AID → the AID of the SD they are associated with."""
    out = {}
    for e in registry.applications:
        if e.privileges is None or not e.privileges.is_security_domain:
            out[bytes(e.aid).hex().upper()] = bytes(e.associated_sd_aid or b"").hex().upper()
    return out


def card_personalisation(registry: Any, aid: str) -> dict[str, str]:
    """DGI (4 hex digits) → value (hex) the card stored for application ``aid``."""
    from gp.commands.store_data import parse_dgis

    out: dict[str, str] = {}
    for app_aid, records in registry.personalization.items():
        if bytes(app_aid).hex().upper() == aid:
            for _structure, data in records:  # each STORE DATA sequence: DGI records
                out.update({f"{d.tag:04X}": bytes(d.value).hex().upper() for d in parse_dgis(bytes(data))})
    return out


def card_kvns(registry: Any, aid: str) -> list[int]:
    for sd_aid, kvns in registry.key_versions.items():
        if bytes(sd_aid).hex().upper() == aid:
            return list(kvns)
    return []


# --- enrolment (as run_demo does for its gateways) ---------------------------------------------


def agent_init(*, serial: str, directory: Path, server: str) -> dict[str, Any]:
    """``python -m agent init`` with a soft SE in ``directory``; the config long-polls ``server``."""
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "agent.toml"
    out = subprocess.run(
        [sys.executable, "-m", "agent", "init", "--config", str(config), "--server", server,
         "--serial", serial, "--backend", f"soft:{directory / 'card.se'}", "--force"],
        capture_output=True,
        text=True,
        check=False,
        cwd=settings.BASE_DIR,
    )  # fmt: skip
    if out.returncode:
        raise StoryFailed(f"agent init {serial}: {out.stderr.strip()[-300:]}")
    point_at(config, server)
    return dict(json.loads(out.stdout))


def point_at(config: Path, server: str, wait_s: float = AGENT_WAIT_S) -> None:
    """A demo gateway's config talks to ``server`` and long-polls (the demo's gateways are online,
    DESIGN §8): rewritten only when it says otherwise."""
    from dataclasses import replace

    from agent.config import load_config, write_config

    current = load_config(config)
    if current.server_url.rstrip("/") != server or current.poll.wait_s != wait_s:
        poll = replace(current.poll, wait_s=wait_s)
        write_config(config, replace(current, server_url=server, poll=poll))


def adopt_card(*, device: Any, se: Any, info: dict[str, Any]) -> str:
    """After ``agent init``: the device's identity key, the SE's serial and CPLC, its ISD keys
    imported into the SE issuer's vault (the manufacturer's and issuer's enrolment, done for the
    demo) and its CASD key certified by the Controlling Authority. Returns the CASD state."""
    from django.db import transaction

    from devices.identity import forget_identity
    from devices.models import Device
    from devices.services import identity_key_id
    from gp.scp03 import StaticKeys
    from keys.selectors import active_keyset
    from keys.services import keyset_import
    from tenants.access import Actor
    from tenants.models import MemberRole

    isd_keys = json.loads(Path(info["isd_keys_file"]).read_text())
    issuer_actor = Actor(user=None, org=se.issuer, member_role=MemberRole.OWNER)
    with transaction.atomic():
        pem = info["identity_public_key"]
        Device.objects.filter(pk=device.pk).update(
            identity_public_key=pem, identity_key_id=identity_key_id(pem)
        )
        forget_identity(device.identity_key_id)
        se.serial = info["se"]["serial"]
        se.cplc = info["se"].get("cplc", "")
        se.save(update_fields=["serial", "cplc"])
        isd = se.security_domains.get(is_isd=True)
        current = active_keyset(isd)
        if current is not None:
            current.delete()  # the seed's placeholder record, never a real card's keys
        keyset_import(
            actor=issuer_actor,
            security_domain=isd,
            kvn=int(info["se"]["kvn"]),
            keys=StaticKeys(
                enc=bytes.fromhex(isd_keys["enc"]),
                mac=bytes.fromhex(isd_keys["mac"]),
                dek=bytes.fromhex(isd_keys["dek"]),
            ),
            sequence_counter=int(info["se"]["sequence_counter"]),
            i_param=int(info["se"]["i_param"]),
        )
    casd = info["se"].get("casd_public_key")
    if not casd:
        return "none"
    from keys.handover import casd_public_key_der, secure_element_casd_record

    state = secure_element_casd_record(
        actor=issuer_actor, secure_element=se, casd_der=casd_public_key_der(casd)
    )
    return str(state.get("state"))


def enrol_gateway(
    *, serial: str, directory: Path, server: str, kind: str, maker: str, issuer: str, subscriber: str | None
) -> Any:
    """A new device of ``maker`` with an SE of ``issuer`` (and ``subscriber``), enrolled with its
    soft card. Returns the Device."""
    from devices import services as device_services
    from devices.models import SecureElementKind
    from tenants.access import Actor
    from tenants.models import MemberRole, Organisation

    info = agent_init(serial=serial, directory=directory, server=server)
    orgs = {
        o.slug: o for o in Organisation.objects.filter(slug__in=[maker, issuer, subscriber, "siliconsafe"])
    }
    isd_aid = json.loads(Path(info["isd_keys_file"]).read_text()).get("isd_aid", "A000000151000000")

    def owner(slug: str) -> Actor:
        return Actor(user=None, org=orgs[slug], member_role=MemberRole.OWNER)

    device = device_services.device_register(
        actor=owner(maker),
        serial=serial,
        kind=kind,
        subscriber=orgs[subscriber] if subscriber else None,
        identity_public_key=info["identity_public_key"],
        key_id=info["key_id"],
    )
    se = device_services.secure_element_register(
        actor=owner(issuer),
        device=device,  # the demo vouches for both sides (as seed_demo does)
        serial=info["se"]["serial"],
        kind=SecureElementKind.SE,
        isd_aid=isd_aid,
        supplier=orgs.get("siliconsafe"),
        cplc=info["se"].get("cplc", ""),
    )
    state = adopt_card(device=device, se=se, info=info)
    if info["se"].get("casd_public_key") and state != "certified":
        raise StoryFailed(f"the CASD of {serial} was not certified ({state})")
    return device


# --- a provider's own tooling: python -m sdk ---------------------------------------------------


@dataclass
class ProviderTooling:
    """A provider's own process and key store (``python -m sdk``, docs/provider-sdk.md): its keys
    never reach Tessera, only its API token is used."""

    server: str
    org: str
    token: str
    store: Path
    timeout: float = 120
    ca_id: str = ""  # the CA to pin where a deployment has several (its id, known out of band)

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "TESSERA_URL": self.server,
            "TESSERA_ORG": self.org,
            "TESSERA_TOKEN": self.token,
            "TESSERA_PROVIDER_STORE": str(self.store),
            "PYTHONPATH": str(Path(settings.BASE_DIR)),
        }

    def run(self, *args: str) -> dict[str, Any]:
        out = subprocess.run(
            [sys.executable, "-m", "sdk", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=self.timeout,
            cwd=settings.BASE_DIR,
            check=False,
        )
        if out.returncode:
            raise StoryFailed(f"tessera-provider {' '.join(args[:2])}: {out.stderr.strip()[-300:]}")
        return dict(json.loads(out.stdout)) if out.stdout.strip() else {}

    def ready(self) -> None:
        """Its OCE key, the CA root pinned, its OCE certificate from the Controlling Authority."""
        self.store.parent.mkdir(parents=True, exist_ok=True)
        if not (self.store / "store.json").exists():
            self.run("init", "--no-passphrase")
        which = ["--ca", self.ca_id] if self.ca_id else []
        fingerprint = self.run("ca", "pin", "--fetch", *which)["fingerprint_sha256"]
        self.run("ca", "pin", "--fetch", *which, "--fingerprint", fingerprint)
        if not (self.store / "oce-certificate.json").exists():
            self.run("certificate", "request")

    def load_keys(self, device_id: str, sd: str) -> dict[str, Any]:
        return self.run("keys", "load", "--device", device_id, "--sd", sd, "--timeout", "60")

    def personalize(self, device_id: str, sd: str, app: str, dgis: dict[str, str]) -> dict[str, Any]:
        args = ["personalize", "--device", device_id, "--sd", sd, "--app", app, "--timeout", "60"]
        for dgi, value in dgis.items():
            args += ["--dgi", f"{dgi}={value}"]
        return self.run(*args)

    def key_sets(self) -> list[dict[str, Any]]:
        return list(self.run("keys", "list").get("key_sets", []))
