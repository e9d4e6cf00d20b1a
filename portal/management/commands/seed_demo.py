"""``manage.py seed_demo``: the three worlds of DESIGN §1, idempotent.

Every role is present; each organisation has one user (username = the organisation's short name)
and a platform operator ``operator`` exists. All share the password in ``TESSERA_DEMO_PASSWORD``
(default ``tessera-demo``). Running it again changes nothing and prints the logins again.
"""

from __future__ import annotations

import os
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from devices import services as device_services
from devices.models import DeviceKind, SecureElementKind
from keys.ca import ca_create
from tenants.access import Actor
from tenants.models import Consent, Contract, MemberRole, Membership, Organisation, OrgRole, OrgStatus
from tenants.services import mandate_grant

R = OrgRole
ISD_AID = "A000000151000000"

# slug, name, roles, world
ORGANISATIONS: list[tuple[str, str, list[str], str]] = [
    ("siliconsafe", "SiliconSafe Secure Elements", [R.SE_SUPPLIER], "all"),
    ("trustroot-ca", "TrustRoot Controlling Authority", [R.CONTROLLING_AUTHORITY], "all"),
    ("trustsm", "TrusTSM Services", [R.TSM], "all"),
    ("netlink", "NetLink Mobile", [R.NETWORK_PROVIDER], "all"),
    # utilities
    ("voltameter", "VoltaMeter Devices", [R.DEVICE_MANUFACTURER], "utilities"),
    ("gridco", "GridCo Distribution", [R.SE_ISSUER, R.APPLICATION_PROVIDER], "utilities"),
    ("sunpower", "SunPower Energy (SP-1)", [R.SERVICE_PROVIDER, R.APPLICATION_PROVIDER], "utilities"),
    ("greenwatt", "GreenWatt Energy (SP-2)", [R.SERVICE_PROVIDER, R.APPLICATION_PROVIDER], "utilities"),
    ("home-ana", "Ana's household", [R.SERVICE_SUBSCRIBER, R.NETWORK_SUBSCRIBER], "utilities"),
    # automotive
    ("autowerk", "AutoWerk Cars", [R.DEVICE_MANUFACTURER, R.SE_ISSUER], "automotive"),
    ("quickfix", "QuickFix Garage", [R.APPLICATION_PROVIDER], "automotive"),
    ("trackguard", "TrackGuard Theft Tracking", [R.APPLICATION_PROVIDER], "automotive"),
    ("drivesure", "DriveSure Insurance", [R.APPLICATION_PROVIDER], "automotive"),
    ("owner-ben", "Ben (car owner)", [R.SERVICE_SUBSCRIBER], "automotive"),
    # healthcare
    ("medigate", "MediGate Gateways", [R.DEVICE_MANUFACTURER], "healthcare"),
    ("carekit", "CareKit Health Integration", [R.SE_ISSUER], "healthcare"),
    ("northclinic", "North Clinic", [R.APPLICATION_PROVIDER, R.SERVICE_PROVIDER], "healthcare"),
    ("southclinic", "South Clinic", [R.APPLICATION_PROVIDER, R.SERVICE_PROVIDER], "healthcare"),
    ("patient-cara", "Cara (patient)", [R.SERVICE_SUBSCRIBER], "healthcare"),
]


class Command(BaseCommand):
    help = "Create the demo organisations, users and devices of the three field stories (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        password = os.environ.get("TESSERA_DEMO_PASSWORD", "tessera-demo")
        if Organisation.objects.filter(slug="gridco").exists():
            self.stdout.write("Demo data already present; nothing changed.")
        else:
            with transaction.atomic():
                self._seed(password)
            self.stdout.write(self.style.SUCCESS("Demo data created."))
        self._print_logins(password)

    def _seed(self, password: str) -> None:
        User = get_user_model()
        operator = User.objects.create_user("operator", "operator@tessera.test", password, is_staff=True)
        operator.save()
        orgs: dict[str, Organisation] = {}
        actors: dict[str, Actor] = {}
        for slug, name, roles, _world in ORGANISATIONS:
            org = Organisation.objects.create(
                slug=slug,
                name=name,
                roles=list(roles),
                status=OrgStatus.ACTIVE,
                contact_email=f"{slug}@tessera.test",
            )
            user = User.objects.create_user(slug, f"{slug}@tessera.test", password)
            Membership.objects.create(user=user, org=org, role=MemberRole.OWNER)
            orgs[slug] = org
            actors[slug] = Actor(user=user, org=org, member_role=MemberRole.OWNER)
        # The Controlling Authority's root (key sealed in its vault): it certifies CASDs and OCEs.
        ca_create(actor=actors["trustroot-ca"], name="TrustRoot Root CA")

        def fleet(
            maker: str,
            issuer: str,
            kind: str,
            prefix: str,
            count: int,
            se_kind: str = SecureElementKind.SE,
            subscriber: str | None = None,
        ) -> list[Any]:
            out = []
            for i in range(1, count + 1):
                device = device_services.device_register(
                    actor=actors[maker],
                    serial=f"{prefix}-{i:04d}",
                    kind=kind,
                    subscriber=orgs[subscriber] if subscriber and i == 1 else None,
                )
                se = device_services.secure_element_register(
                    actor=actors[issuer],
                    device=device,
                    serial=f"{prefix}{i:04d}".encode().hex().upper()[:16],
                    kind=se_kind,
                    isd_aid=ISD_AID,
                    supplier=orgs["siliconsafe"],
                )
                out.append((device, se))
            return out

        # Utilities: meters made by VoltaMeter, SEs issued by GridCo; Ana has meter 1 and SunPower supplies it.
        meters = fleet("voltameter", "gridco", DeviceKind.METER, "MTR", 3, subscriber="home-ana")
        mandate_grant(
            actor=actors["gridco"],
            grantee=orgs["trustsm"],
            actions=["devices.view", "sd.create", "sd.delete", "keys.load", "status.read"],
        )
        # The suppliers let the TSM create and remove their security domains and load their keys.
        for provider in ("sunpower", "greenwatt"):
            mandate_grant(
                actor=actors[provider],
                grantee=orgs["trustsm"],
                actions=["sd.create", "sd.delete", "keys.load", "keys.rotate", "apps.manage"],
            )
        meter, meter_se = meters[0]
        device_services.security_domain_record(
            actor=actors["gridco"],
            secure_element=meter_se,
            aid="A0000001515350475249",
            owner=orgs["gridco"],
            privileges=["security_domain"],
        )
        device_services.security_domain_record(
            actor=actors["gridco"],
            secure_element=meter_se,
            aid="A000000151535053554E",
            owner=orgs["sunpower"],
            privileges=["security_domain", "receipt_generation"],
        )
        Contract.objects.create(
            subscriber=orgs["home-ana"],
            provider=orgs["sunpower"],
            device=meter,
            service="Electricity supply",
            sd_aid="A000000151535053554E",
            switch_allowed=True,
            notice_days=14,
            connectivity_payer=orgs["gridco"],
        )
        # Automotive: AutoWerk makes the car and issues its SE; Ben consents to the garage and the tracker.
        cars = fleet("autowerk", "autowerk", DeviceKind.OBU, "OBU", 2, subscriber="owner-ben")
        car, car_se = cars[0]
        for slug, aid, purpose in [
            ("quickfix", "A00000015153504741", "Diagnostics"),
            ("trackguard", "A00000015153505452", "Theft tracking"),
        ]:
            Consent.objects.create(
                subscriber=orgs["owner-ben"],
                grantee=orgs[slug],
                device=car,
                purpose=purpose,
                scopes=["own_security_domain"],
            )
            device_services.security_domain_record(
                actor=actors["autowerk"],
                secure_element=car_se,
                aid=aid,
                owner=orgs[slug],
                privileges=["security_domain"],
            )
        Consent.objects.create(
            subscriber=orgs["owner-ben"],
            grantee=orgs["drivesure"],
            device=car,
            purpose="Usage-based insurance",
            scopes=["driving_data"],
        )
        # Healthcare: MediGate gateways, CareKit issues the SE/TEE, TrusTSM creates North Clinic's SD.
        gateways = fleet(
            "medigate", "carekit", DeviceKind.MEDICAL_GATEWAY, "GW", 2, subscriber="patient-cara"
        )
        gateways += fleet(
            "medigate", "carekit", DeviceKind.MEDICAL_GATEWAY, "GWT", 1, se_kind=SecureElementKind.TEE
        )
        mandate_grant(
            actor=actors["carekit"],
            grantee=orgs["trustsm"],
            actions=["devices.view", "sd.create", "sd.delete", "keys.load", "status.read"],
        )
        for clinic in ("northclinic", "southclinic"):
            mandate_grant(
                actor=actors[clinic],
                grantee=orgs["trustsm"],
                actions=["sd.create", "sd.delete", "keys.load", "keys.rotate", "apps.manage"],
            )
        gw, gw_se = gateways[0]
        device_services.security_domain_record(
            actor=actors["carekit"],
            secure_element=gw_se,
            aid="A00000015153504E43",
            owner=orgs["northclinic"],
            privileges=["security_domain"],
        )
        Contract.objects.create(
            subscriber=orgs["patient-cara"],
            provider=orgs["northclinic"],
            device=gw,
            service="Remote patient monitoring",
            sd_aid="A00000015153504E43",
            switch_allowed=False,
            # The kit is leased: CareKit assigns the clinic; Cara is informed, her consent is not asked.
            consent_required=False,
        )

    def _print_logins(self, password: str) -> None:
        self.stdout.write(f"\nLog in at http://127.0.0.1:8000/ with password '{password}' as:")
        self.stdout.write(f"  {'operator':<14} platform operator (approves applications)")
        for slug, name, roles, world in ORGANISATIONS:
            self.stdout.write(f"  {slug:<14} {name} [{', '.join(roles)}] — {world}")
