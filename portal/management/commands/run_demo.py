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
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction

DEMO_GATEWAYS = ["MTR-0001", "MTR-0002", "OBU-0001", "GW-0001"]


DEMO_WAIT_S = 20.0  # long-poll wait of the demo gateways: jobs start the moment they are compiled


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
        from gp.scp03 import StaticKeys
        from keys.selectors import active_keyset
        from keys.services import keyset_import
        from tenants.access import Actor
        from tenants.models import MemberRole

        device = Device.objects.filter(serial=serial).select_related("manufacturer").first()
        if device is None:
            self.stderr.write(f"demo device {serial} not found; run seed_demo first")
            return None
        directory = Path(settings.VAR_DIR) / "gateways" / serial
        config = directory / "agent.toml"
        if config.exists() and device.identity_key_id:
            from dataclasses import replace

            from agent.config import load_config, write_config

            current = load_config(config)
            if current.server_url.rstrip("/") != server or current.poll.wait_s != DEMO_WAIT_S:
                poll = replace(current.poll, wait_s=DEMO_WAIT_S)
                write_config(config, replace(current, server_url=server, poll=poll))
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
        from dataclasses import replace as _replace

        from agent.config import load_config as _load
        from agent.config import write_config as _write

        written = _load(config)  # the demo's gateways are online: they long-poll (DESIGN §8)
        _write(config, _replace(written, poll=_replace(written.poll, wait_s=DEMO_WAIT_S)))
        isd_keys = json.loads(Path(info["isd_keys_file"]).read_text())
        se = device.secure_elements.select_related("issuer").first()
        with transaction.atomic():
            pem = info["identity_public_key"]
            Device.objects.filter(pk=device.pk).update(
                identity_public_key=pem, identity_key_id=identity_key_id(pem)
            )
            forget_identity(device.identity_key_id)
            if se is not None:
                se.serial = info["se"]["serial"]
                se.cplc = info["se"].get("cplc", "")
                se.save(update_fields=["serial", "cplc"])
                isd = se.security_domains.get(is_isd=True)
                current = active_keyset(isd)
                if current is not None:
                    current.delete()  # the seed's placeholder record, never a real card's keys
                issuer_actor = Actor(user=None, org=se.issuer, member_role=MemberRole.OWNER)
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
        self.stdout.write(f"gateway {serial}: enrolled (key id {info['key_id'][:16]}…)")
        return config
