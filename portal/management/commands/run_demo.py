"""``manage.py run_demo``: the portal plus simulated gateways, for ``make run``.

1. Prepares (once, idempotently) a software gateway for a few seeded demo devices: ``python -m
   agent init`` with a soft SE under ``$TESSERA_VAR_DIR/gateways/<serial>/``, then records the
   device's identity key and imports the card's ISD keys into the SE issuer's vault — the same
   enrolment a manufacturer and an issuer do through the API, done here for the demo.
2. Starts the portal (daphne, ASGI), one agent process per gateway, and a sweeper loop (timeouts;
   Celery beat's job when Redis is configured), and stops them all on Ctrl-C.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

DEMO_GATEWAYS = ["MTR-0001", "MTR-0002", "OBU-0001", "GW-0001"]


GREENWATT_SD = "A00000015153504757"  # GreenWatt's SD on MTR-0002 (utilities world)
DEMO_WAIT_S = 20.0  # long-poll wait of the demo gateways: jobs start the moment they are compiled


def _point_at(config: Path, server: str) -> None:
    """A demo gateway's config talks to ``server`` and long-polls (scenarios.runtime.point_at)."""
    from scenarios.runtime import point_at

    point_at(config, server, DEMO_WAIT_S)


class Command(BaseCommand):
    help = "Start the portal with simulated gateways (embedded default demo)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--prepare-only", action="store_true", help="Enrol the demo gateways, start nothing."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        server = f"http://{options['host']}:{options['port']}"
        configs = [self._prepare(serial, server) for serial in DEMO_GATEWAYS]
        configs = [c for c in configs if c is not None]
        if options["prepare_only"]:
            return
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        procs: list[subprocess.Popen[bytes]] = []
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "daphne",
                    "-b",
                    options["host"],
                    "-p",
                    str(options["port"]),
                    "portal.asgi:application",
                ],
                env=env,
            )
        )
        logs = Path(settings.VAR_DIR) / "gateways"
        for config in configs:
            log = open(config.with_suffix(".log"), "ab")  # noqa: SIM115 - closed with the process
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "agent", "run", "--config", str(config)],
                    env=env,
                    stdout=log,
                    stderr=log,
                )
            )
        self.stdout.write(f"Simulated gateways: {', '.join(DEMO_GATEWAYS)} (logs in {logs})")
        stop = threading.Event()
        threading.Thread(target=self._sweeper, args=(stop,), daemon=True).start()
        threading.Thread(target=self._confidential_demo, args=(server, env), daemon=True).start()

        def interrupted(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt  # SIGTERM stops the demo like Ctrl-C: its children go with it

        signal.signal(signal.SIGTERM, interrupted)
        try:
            procs[0].wait()
        except KeyboardInterrupt:
            pass
        finally:
            stop.set()
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()

    def _confidential_demo(self, server: str, env: dict[str, str]) -> None:
        """Utilities world: GreenWatt, the new supplier, gets an SD on meter MTR-0002 (created by the
        TSM for it) and loads its own keys confidentially with its own tooling (``python -m sdk``,
        own key store, only its API token). GridCo, which issued the SE, then sees the SD on its
        device page but not its key check values; nobody but GreenWatt ever held the keys."""
        marker = Path(settings.VAR_DIR) / "demo" / "greenwatt-confidential.done"
        if marker.exists():
            return
        import httpx

        password = os.environ.get("TESSERA_DEMO_PASSWORD", "tessera-demo")
        say = self.stdout.write
        try:
            for _ in range(60):
                try:
                    httpx.get(f"{server}/healthz", timeout=2)
                    break
                except httpx.HTTPError:
                    time.sleep(0.5)
            tokens = {}
            for slug in ("gridco", "trustsm", "greenwatt"):
                r = httpx.post(f"{server}/api/v1/auth/token/", json={"username": slug, "password": password})
                r.raise_for_status()
                tokens[slug] = r.json()["token"]

            def api(slug: str) -> httpx.Client:
                return httpx.Client(
                    base_url=f"{server}/api/v1",
                    headers={"Authorization": f"Token {tokens[slug]}"},
                    timeout=30,
                )

            with api("gridco") as gridco:
                devices = gridco.get("/orgs/gridco/devices/", params={"limit": 200}).json()["results"]
                device = next(d for d in devices if d["serial"] == "MTR-0002")
            device_id = device["id"]

            def job(slug: str, body: dict[str, Any], **params: str) -> dict[str, Any]:
                with api(slug) as c:
                    r = c.post(f"/orgs/{slug}/devices/{device_id}/jobs/", json=body, params=params)
                    if r.status_code != 201:
                        raise RuntimeError(f"{body['kind']}: {r.status_code} {r.text[:200]}")
                    url = f"/orgs/{slug}/jobs/{r.json()['id']}/"
                    for _ in range(240):
                        state = c.get(url, params=params).json()
                        if state["state"] in ("succeeded", "failed", "rejected", "timed_out", "canceled"):
                            if state["state"] != "succeeded":
                                raise RuntimeError(
                                    f"{body['kind']}: {state['state']} {state.get('error_code')}"
                                )
                            return state
                        time.sleep(0.5)
                raise RuntimeError(f"{body['kind']}: still running")

            say("demo: GridCo loads the CA key and the CASD certificate onto MTR-0002's secure element")
            job("gridco", {"kind": "casd_personalize", "params": {}})
            say("demo: the TSM creates GreenWatt's security domain on MTR-0002")
            job(
                "trustsm",
                {"kind": "create_security_domain", "params": {"aid": GREENWATT_SD, "owner": "greenwatt"}},
                on_behalf_of="gridco",
            )
            from scenarios.runtime import ProviderTooling

            tooling = ProviderTooling(
                server=server,
                org="greenwatt",
                token=tokens["greenwatt"],
                store=Path(settings.VAR_DIR) / "demo" / "greenwatt-store",
                timeout=600,
            )
            say(
                "demo: GreenWatt's own tooling: OCE key, certificate, CA pin, CASD check, confidential key load"
            )
            tooling.ready()
            loaded = tooling.load_keys(device_id, GREENWATT_SD)
            marker.write_text(json.dumps({"device": device_id, "sd": GREENWATT_SD}) + "\n")
            say(
                f"demo: GreenWatt's keys are on MTR-0002 (receipt verified: {loaded.get('receipt_verified', True)}); "
                "log in as gridco and open MTR-0002: the SD is there, its key check values are not"
            )
        except Exception as exc:  # noqa: BLE001 - a demo step failing must not stop the portal
            self.stderr.write(f"demo: confidential key loading did not complete: {exc}")

    def _sweeper(self, stop: threading.Event) -> None:
        from jobs.sweeper import sweep

        while not stop.wait(5):
            try:
                sweep()
            except Exception as exc:  # noqa: BLE001 - the demo keeps going; the error is shown
                self.stderr.write(f"sweeper: {exc}")

    def _prepare(self, serial: str, server: str) -> Path | None:
        from devices.identity import forget_identity
        from devices.models import Device
        from devices.services import identity_key_id
        from scenarios.runtime import adopt_card

        device = Device.objects.filter(serial=serial).select_related("manufacturer").first()
        if device is None:
            self.stderr.write(f"demo device {serial} not found; run seed_demo first")
            return None
        directory = Path(settings.VAR_DIR) / "gateways" / serial
        config = directory / "agent.toml"
        if config.exists() and device.identity_key_id:
            _point_at(config, server)
            return config
        directory.mkdir(parents=True, exist_ok=True)
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "agent",
                "init",
                "--config",
                str(config),
                "--server",
                server,
                "--serial",
                serial,
                "--backend",
                f"soft:{directory / 'card.se'}",
                "--force",
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        info = json.loads(out.stdout)
        _point_at(config, server)
        se = device.secure_elements.select_related("issuer").first()
        if se is None:
            pem = info["identity_public_key"]
            Device.objects.filter(pk=device.pk).update(
                identity_public_key=pem, identity_key_id=identity_key_id(pem)
            )
            forget_identity(device.identity_key_id)
        else:
            # The identity key, the SE's serial, its ISD keys into the issuer's vault, its CASD
            # certified: the manufacturer's and the issuer's enrolment (shared with the stories).
            state = adopt_card(device=device, se=se, info=info)
            if info["se"].get("casd_public_key") and state != "certified":
                self.stderr.write(f"gateway {serial}: CASD not certified ({state})")
        self.stdout.write(f"gateway {serial}: enrolled (key id {info['key_id'][:16]}…)")
        return config
