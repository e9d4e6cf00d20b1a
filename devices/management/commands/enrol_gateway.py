"""Enrol a freshly initialised gateway: the device for its manufacturer, the SE (with its ISD key
set, imported into the issuer's vault) for its issuer, paired with each other.

    python manage.py enrol_gateway --manufacturer SLUG --issuer SLUG --init-json FILE --kind meter \\
        [--subscriber SLUG]

``FILE`` is what ``agent init`` printed; its ``isd_keys_file`` (the manufacturing hand-over of the
ISD keys) is read and may be deleted afterwards (``--delete-keys-file``). Run by the platform
operator (``make run``): each registration acts as an owner of the organisation concerned, goes
through the same services as the API and is audited. Prints KCVs, never keys.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from devices import services as device_services
from devices.models import DeviceKind
from keys import services as key_services
from portal.errors import DomainError
from tenants.access import Actor
from tenants.models import MemberRole, Membership, Organisation, OrgStatus


def _owner_actor(slug: str) -> Actor:
    membership = (
        Membership.objects.select_related("org", "user")
        .filter(org__slug=slug, org__status=OrgStatus.ACTIVE, role=MemberRole.OWNER)
        .order_by("created_at")
        .first()
    )
    if membership is None:
        raise CommandError(f"No active organisation '{slug}' with an owner.")
    return Actor(user=membership.user, org=membership.org, member_role=membership.role)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CommandError(f"Cannot read {what} {path}: {type(exc).__name__}.") from None
    if not isinstance(data, dict):
        raise CommandError(f"{what} {path} is not a JSON object.")
    return data


class Command(BaseCommand):
    help = "Register a gateway initialised with `agent init`: its device, SE and ISD keys, paired."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--manufacturer", required=True, help="short name of the device manufacturer")
        parser.add_argument("--issuer", required=True, help="short name of the SE issuer")
        parser.add_argument("--init-json", required=True, type=Path, help="the JSON `agent init` printed")
        parser.add_argument("--kind", default=DeviceKind.METER, choices=DeviceKind.values)
        parser.add_argument("--subscriber", help="short name of the subscriber living with the device")
        parser.add_argument(
            "--delete-keys-file", action="store_true", help="delete the ISD keys file after import"
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        init = _read_json(opts["init_json"], "the init JSON")
        se = init.get("se") or {}
        maker = _owner_actor(opts["manufacturer"])
        issuer = _owner_actor(opts["issuer"])
        subscriber = None
        if opts.get("subscriber"):
            subscriber = Organisation.objects.filter(slug=opts["subscriber"], status=OrgStatus.ACTIVE).first()
            if subscriber is None:
                raise CommandError(f"No active organisation '{opts['subscriber']}'.")
        keys_file = init.get("isd_keys_file")
        hand_over: dict[str, Any] | None = None
        if keys_file:
            path = Path(keys_file)
            if not path.is_absolute():
                path = opts["init_json"].resolve().parent / path
            hand_over = _read_json(path, "the ISD keys file")
        try:
            with transaction.atomic():
                device = device_services.device_register(
                    actor=maker,
                    serial=str(init.get("serial", "")),
                    kind=opts["kind"],
                    subscriber=subscriber,
                    identity_public_key=str(init.get("identity_public_key", "")),
                    key_id=str(init.get("key_id", "")),
                    se_issuer=opts["issuer"] if se.get("serial") else "",
                    se_serial=str(se.get("serial", "")),
                )
                enrolment = None
                if hand_over is not None and se.get("isd_aid"):
                    keys = key_services.static_keys_from_hex(
                        enc=hand_over.get("enc"), mac=hand_over.get("mac"), dek=hand_over.get("dek")
                    )
                    kvn = se.get("kvn", hand_over.get("kvn"))
                    if hand_over.get("kvn") not in (None, kvn):
                        raise CommandError("The ISD keys file is for another KVN than the init JSON says.")
                    enrolment = key_services.secure_element_enrol(
                        actor=issuer,
                        serial=str(se["serial"]),
                        kind="se",
                        isd_aid=str(se["isd_aid"]),
                        keys=keys,
                        kvn=kvn,
                        i_param=se.get("i_param", 0x70),
                        sequence_counter=se.get("sequence_counter"),
                        cplc=str(se.get("cplc") or ""),
                        device_manufacturer=opts["manufacturer"],
                        device_serial=device.serial,
                    )
        except DomainError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(f"device {device.serial} enrolled (key id {device.identity_key_id})")
        if enrolment is None:
            self.stdout.write(
                "no ISD keys in the init JSON: register the SE with its issuer's keys separately"
            )
        else:
            ks = enrolment.keyset
            assert ks is not None  # an SE (kind "se") is enrolled with its ISD key set
            self.stdout.write(
                f"SE {enrolment.secure_element.serial} registered for {opts['issuer']}, "
                f"{'paired' if enrolment.device else 'NOT paired'}; ISD KVN {ks.kvn:#04x} "
                f"KCV enc {ks.kcv_enc} mac {ks.kcv_mac} dek {ks.kcv_dek}"
            )
            if opts["delete_keys_file"] and keys_file:
                Path(keys_file).unlink(missing_ok=True)
