"""The three field stories (issue 6 item 5, white paper §4), each a function of a Runtime.

Every action is a stakeholder's call to the portal's REST API (or its own tooling); the final
checks read each card's registry from its soft SE and the database. AIDs: providers' SDs in the
demo range ``A000000151 5350 …``; applications are instances of the Tessera demo load file
(``F054455353 4D01``, jobs/compiler/demo_app.py) under ``F054455353 4D0101 …``.

Where the demo load file lives matters: a related deletion of an SD removes the load files
associated with it (GP), which the card refuses while another SD's application is an instance of
one. So in each story the load file is loaded into an SD that stays (the issuer's, or a provider
that keeps its place), and later installations only instantiate it.
"""

from __future__ import annotations

from typing import Any

from scenarios.runtime import (
    DEMO_LOAD_FILE,
    Gateway,
    Runtime,
    StoryFailed,
    card_apps,
    card_kvns,
    card_personalisation,
    card_sds,
)

# --- helpers shared by the stories ------------------------------------------------------------


def _install(
    rt: Runtime, slug: str, gw: Gateway, sd: str, app: str, *, on_behalf_of: str | None = None
) -> None:
    """Install an instance of the demo application in ``sd``; the load file is loaded with the
    first installation on the card (in that SD) and only instantiated afterwards."""
    from jobs.models import Application

    loaded = Application.objects.filter(
        secure_element__device_id=gw.device_id, load_file_aid=DEMO_LOAD_FILE
    ).exists()
    params: dict[str, Any] = {"sd": sd, "instance_aid": app, "load": not loaded}
    if loaded:
        params["load_file_aid"] = DEMO_LOAD_FILE
    rt.run_job(slug, gw, "install_application", params, on_behalf_of=on_behalf_of)


def _db_sds(gw: Gateway) -> dict[str, str]:
    """AID → owner slug of the supplementary SDs the database records on the gateway's SE."""
    from devices.models import SecurityDomain

    return {
        sd.aid: sd.owner.slug
        for sd in SecurityDomain.objects.filter(
            secure_element__device_id=gw.device_id, is_isd=False
        ).select_related("owner")
    }


def _live_keysets(gw: Gateway, aid: str) -> list[Any]:
    from keys.models import KeySet

    return list(
        KeySet.objects.filter(
            security_domain__secure_element__device_id=gw.device_id,
            security_domain__aid=aid,
            status__in=["active", "pending"],
        )
    )


def _contract(device_id: str, provider: str) -> Any:
    from tenants.models import Contract

    return (
        Contract.objects.filter(device_id=device_id, provider__slug=provider).order_by("-starts_at").first()
    )


def _sign(gw: Gateway, subscriber: str, provider: str, service: str, sd: str, **terms: Any) -> Any:
    """A contract between the subscriber and a provider for the device (signed outside Tessera;
    the demo records it as seed_demo does)."""
    from tenants.models import Contract, Organisation

    orgs = {x.slug: x for x in Organisation.objects.filter(slug__in=[subscriber, provider])}
    return Contract.objects.create(
        subscriber=orgs[subscriber],
        provider=orgs[provider],
        device_id=gw.device_id,
        service=service,
        sd_aid=sd,
        **terms,
    )


def _hex(text: str) -> str:
    return text.encode().hex().upper()


def _personalize(rt: Runtime, slug: str, gw: Gateway, sd: str, app: str, data: dict[str, str]) -> None:
    """Personalise the instance ``app`` in ``sd`` with ``data`` (DGI → hex value) in a job of ``slug``."""
    rt.run_job(
        slug,
        gw,
        "personalize_application",
        {"sd": sd, "instance_aid": app, "data": [{"dgi": k, "value": v} for k, v in data.items()]},
    )


def _consent(
    rt: Runtime, provider: str, subscriber: str, gw: Gateway, sd: str, purpose: str, scopes: list[str]
) -> Any:
    """The provider asks the subscriber's consent for its SD on the device; the subscriber approves.
    Returns the consent's id."""
    consent = rt.call(
        provider,
        "POST",
        f"/orgs/{provider}/consents/",
        json={"device": gw.serial, "purpose": purpose, "scopes": scopes, "duration_days": 365, "sd_aid": sd},
    )
    rt.call(subscriber, "POST", f"/orgs/{subscriber}/consents/{consent['id']}/approve/", json={})
    return consent["id"]


def _start_switch(rt: Runtime, slug: str, gw: Gateway, provider: str, sd: str, keys_mode: str) -> Any:
    """``slug`` starts switching the device to ``provider`` (its SD ``sd``); returns the switch."""
    return rt.call(
        slug,
        "POST",
        f"/orgs/{slug}/switches/",
        json={"device": gw.serial, "new_provider": provider, "new_sd_aid": sd, "keys_mode": keys_mode},
        expect=(201,),
    )


def _switch_completed(rt: Runtime, slug: str, switch_id: Any) -> None:
    """Wait for the switch to end; a switch that does not complete fails the story."""
    done = rt.wait_switch(slug, switch_id)
    if done["state"] != "completed":
        raise StoryFailed(f"the switch ended {done['state']} ({done.get('error_code') or ''})")


def _read_back(rt: Runtime, gw: Gateway, what: str) -> Any:
    """The closing step: every agent stops and the device's card is read back; returns its registry."""
    with rt.step(f"Every agent stops; the {what}'s card is read back") as o:
        rt.stop_all()
        registry = rt.card(gw)
        o["text"] = f"{len(card_sds(registry))} SDs on the card"
    return registry


def _check_provider_custody(rt: Runtime, who: str, gw: Gateway, sd: str, claim: str) -> None:
    """Check that every live key set of ``sd`` is in the provider's custody and nothing is sealed."""
    live = _live_keysets(gw, sd)
    rt.check(
        who,
        claim,
        bool(live) and all(k.custody == "provider" and not k.sealed for k in live),
        str([(k.kvn, k.custody) for k in live]),
    )


# --- utilities --------------------------------------------------------------------------------

GRIDCO_SD = "A0000001515350475249"  # GridCo's own SD (it is also the SE issuer)
SUNPOWER_SD = "A000000151535053554E"
GREENWATT_SD = "A00000015153504757"
HOME_SD = "A0000001515350484F4D45"
LINE_QUALITY_APP = "F0544553534D01014C51"
BILLING_APP = "F0544553534D0101424C"
CONSUMPTION_APP = "F0544553534D0101434F"


def utilities(rt: Runtime) -> None:
    """Grid operator, two suppliers and a homeowner on one smart meter."""
    rt.say("Utilities: GridCo issues the meter's secure element; Ana's household switches supplier.")
    with rt.step(
        "VoltaMeter builds a meter for Ana; GridCo enrols its secure element; its agent starts"
    ) as o:
        gw = rt.gateway(
            prefix="MTR", kind="meter", maker="voltameter", issuer="gridco", subscriber="home-ana"
        )
        o["text"] = f"meter {gw.serial} online"
    with rt.step("Ana signs an electricity contract with SunPower (SP-1), switching allowed") as o:
        from tenants.models import Organisation

        _sign(
            gw,
            "home-ana",
            "sunpower",
            "Electricity supply",
            SUNPOWER_SD,
            switch_allowed=True,
            notice_days=14,
            connectivity_payer=Organisation.objects.get(slug="gridco"),
        )
        o["text"] = "contract in force"
    with rt.step("GridCo creates its own security domain and installs its line-quality application") as o:
        rt.run_job("gridco", gw, "create_security_domain", {"aid": GRIDCO_SD, "owner": "gridco"})
        _install(rt, "gridco", gw, GRIDCO_SD, LINE_QUALITY_APP)
        o["text"] = "line-quality app selectable in GridCo's SD"
    with rt.step("SunPower asks Ana's consent for its security domain; Ana approves on her phone") as o:
        _consent(
            rt,
            "sunpower",
            "home-ana",
            gw,
            SUNPOWER_SD,
            "Electricity supply and billing",
            ["own_security_domain", "install_application", "readings"],
        )
        o["text"] = "consent granted"
    with rt.step("The TSM creates SunPower's security domain for it; SunPower installs its billing app") as o:
        rt.run_job(
            "trustsm", gw, "create_security_domain", {"aid": SUNPOWER_SD, "owner": "sunpower"}, "gridco"
        )
        _install(rt, "sunpower", gw, SUNPOWER_SD, BILLING_APP)
        _personalize(rt, "sunpower", gw, SUNPOWER_SD, BILLING_APP, {"0101": _hex("SP1-TARIFF-A")})
        o["text"] = "billing app personalised"
    with rt.step(
        "GridCo personalises the card's CASD (CA key and certificate) for confidential key loading"
    ) as o:
        rt.run_job("gridco", gw, "casd_personalize", {})
        o["text"] = "CASD ready"
    greenwatt = rt.tooling("greenwatt")
    with rt.step("GreenWatt (SP-2) readies its own tooling: OCE key, CA root pinned, OCE certificate") as o:
        greenwatt.ready()
        o["text"] = "certified by the Controlling Authority"
    with rt.step("Ana switches to GreenWatt, keys loaded confidentially (make-before-break)") as o:
        sw = _start_switch(rt, "home-ana", gw, "greenwatt", GREENWATT_SD, "confidential")
        rt.wait_for(
            "the switch to wait for GreenWatt's keys",
            lambda: (
                rt.call("home-ana", "GET", f"/orgs/home-ana/switches/{sw['id']}/")["state"]
                in ("awaiting_keys", "completed", "rolled_back", "failed")
            ),
        )
        o["text"] = "GreenWatt's SD created, the switch awaits its keys"
    with rt.step("GreenWatt's tooling loads its keys into its SD in a CA-certified package") as o:
        loaded = greenwatt.load_keys(gw.device_id, GREENWATT_SD)
        o["text"] = f"receipt verified: {loaded.get('receipt_verified')}"
    with rt.step("The switch verifies the card, deletes SunPower's SD and ends SunPower's contract") as o:
        _switch_completed(rt, "home-ana", sw["id"])
        o["text"] = "switch completed"
    with rt.step("GridCo creates Ana's own security domain; Ana installs her consumption application") as o:
        rt.run_job("gridco", gw, "create_security_domain", {"aid": HOME_SD, "owner": "home-ana"})
        _install(rt, "home-ana", gw, HOME_SD, CONSUMPTION_APP)
        o["text"] = "consumption app installed beside the others"
    registry = _read_back(rt, gw, "meter")

    sds, apps = card_sds(registry), card_apps(registry)
    rt.check(
        "SunPower (SP-1)",
        "its SD and billing app are gone from the card",
        SUNPOWER_SD not in sds and BILLING_APP not in apps,
        str(sorted(sds)),
    )
    rt.check(
        "GridCo",
        "its SD and line-quality app stay",
        GRIDCO_SD in sds and apps.get(LINE_QUALITY_APP) == GRIDCO_SD,
        str(apps),
    )
    store_sets = [
        k for k in greenwatt.key_sets() if k.get("sd") == GREENWATT_SD and k.get("status") == "active"
    ]
    rt.check(
        "GreenWatt (SP-2)",
        "its SD is on the card with the keys its own store holds",
        GREENWATT_SD in sds
        and bool(store_sets)
        and int(str(store_sets[-1]["kvn"]), 16 if isinstance(store_sets[-1]["kvn"], str) else 10)
        in card_kvns(registry, GREENWATT_SD),
        f"card KVNs {card_kvns(registry, GREENWATT_SD)}, store {[k.get('kvn') for k in store_sets]}",
    )
    _check_provider_custody(
        rt,
        "GreenWatt (SP-2)",
        gw,
        GREENWATT_SD,
        "Tessera holds no key of its SD (key sets in the provider's custody, nothing sealed)",
    )
    rt.check(
        "Ana",
        "her consumption app sits in her own SD beside the others",
        apps.get(CONSUMPTION_APP) == HOME_SD,
        str(apps),
    )
    db = _db_sds(gw)
    rt.check(
        "GridCo",
        "the database agrees with the card (SDs and owners)",
        sorted(db) == sorted(sds) and db.get(GREENWATT_SD) == "greenwatt",
        f"db {db}",
    )
    old, new = _contract(gw.device_id, "sunpower"), _contract(gw.device_id, "greenwatt")
    rt.check(
        "Ana",
        "exactly one supplier of record: SunPower's contract ended (switched), GreenWatt's active",
        old is not None
        and old.status == "ended"
        and old.end_reason == "switched"
        and new is not None
        and new.status == "active",
    )
    lost = rt.call("sunpower", "GET", "/orgs/sunpower/switches/")["results"]
    mine = [s for s in lost if s.get("device") == gw.serial]
    rt.check(
        "SunPower (SP-1)",
        "learns it lost the meter, not to whom",
        bool(mine)
        and all(s.get("state") == "lost" for s in mine)
        and "greenwatt" not in str(mine).lower()
        and GREENWATT_SD not in str(mine),
        str(mine)[:200],
    )


# --- automotive -------------------------------------------------------------------------------

GARAGE_SD = "A00000015153504741"
TRACKER_SD = "A00000015153505452"
INSURER_SD = "A00000015153504453"
TRACKER_APP = "F0544553534D01015452"
INSURER_APP = "F0544553534D01014453"
TRACKER_DATA = {"0101": _hex("https://track.trackguard.test/v1"), "0102": "01"}
INSURER_DATA = {"0101": _hex("POLICY-DS-88231"), "0102": "02"}


def automotive(rt: Runtime) -> None:
    """A car whose owner decides who may have a place on its secure element."""
    rt.say("Automotive: AutoWerk makes the car and issues its SE; Ben decides who gets a place on it.")
    with rt.step("AutoWerk builds a car for Ben and enrols its secure element; its agent starts") as o:
        gw = rt.gateway(prefix="OBU", kind="obu", maker="autowerk", issuer="autowerk", subscriber="owner-ben")
        o["text"] = f"car {gw.serial} online"
    consents: dict[str, str] = {}
    asks = [
        ("trackguard", TRACKER_SD, "Theft tracking", ["own_security_domain", "install_application"]),
        ("quickfix", GARAGE_SD, "Diagnostics and servicing", ["own_security_domain"]),
        (
            "drivesure",
            INSURER_SD,
            "Usage-based insurance",
            ["own_security_domain", "install_application", "driving_data"],
        ),
    ]
    names = {"trackguard": "TrackGuard", "quickfix": "QuickFix", "drivesure": "DriveSure"}
    for slug, sd, purpose, scopes in asks:
        name = names[slug]
        with rt.step(f"Ben signs up with {name} ({purpose}); {name} asks his consent; Ben approves") as o:
            _sign(gw, "owner-ben", slug, purpose, sd)
            consents[slug] = _consent(rt, slug, "owner-ben", gw, sd, purpose, scopes)
            o["text"] = "granted"
        with rt.step(f"AutoWerk creates {name}'s security domain (its keys go to {name}'s vault)") as o:
            rt.run_job("autowerk", gw, "create_security_domain", {"aid": sd, "owner": slug})
            o["text"] = "SD on the card"
    with rt.step("TrackGuard installs and personalises its tracker (server address)") as o:
        _install(rt, "trackguard", gw, TRACKER_SD, TRACKER_APP)
        _personalize(rt, "trackguard", gw, TRACKER_SD, TRACKER_APP, TRACKER_DATA)
        o["text"] = "tracker personalised"
    with rt.step("DriveSure installs and personalises its driving-data recorder (policy number)") as o:
        _install(rt, "drivesure", gw, INSURER_SD, INSURER_APP)
        _personalize(rt, "drivesure", gw, INSURER_SD, INSURER_APP, INSURER_DATA)
        o["text"] = "recorder personalised"
    with rt.step("Ben withdraws DriveSure's consent; its SD removal runs on the car") as o:
        revoked = rt.call(
            "owner-ben", "POST", f"/orgs/owner-ben/consents/{consents['drivesure']}/revoke/", json={}
        )
        removal = revoked.get("removal_job") or revoked.get("removal_job_id")
        if not removal:
            from tenants.models import Consent

            removal = str(Consent.objects.get(pk=consents["drivesure"]).removal_job_id or "")
        if not removal:
            raise StoryFailed("no removal job was started")
        job = rt.wait_job("autowerk", str(removal))
        if job["state"] != "succeeded":
            raise StoryFailed(f"the removal ended {job['state']}")
        o["text"] = "DriveSure's SD deleted"
    with rt.step("Ben sees the removal done on his consent's history") as o:
        history = rt.call("owner-ben", "GET", f"/orgs/owner-ben/consents/{consents['drivesure']}/history/")
        o["text"] = f"{len(history.get('results', history) if isinstance(history, dict) else history)} events"
    registry = _read_back(rt, gw, "car")

    sds, apps = card_sds(registry), card_apps(registry)
    rt.check(
        "DriveSure",
        "its SD and recorder are gone from the car",
        INSURER_SD not in sds and INSURER_APP not in apps,
        str(sorted(sds)),
    )
    rt.check("QuickFix", "its SD stays", GARAGE_SD in sds)
    rt.check(
        "TrackGuard",
        "its SD and personalised tracker stay",
        TRACKER_SD in sds
        and apps.get(TRACKER_APP) == TRACKER_SD
        and card_personalisation(registry, TRACKER_APP) == TRACKER_DATA,
        str(card_personalisation(registry, TRACKER_APP)),
    )
    db = _db_sds(gw)
    rt.check(
        "Ben", "the database agrees with the car (SDs and owners)", sorted(db) == sorted(sds), f"db {db}"
    )
    from tenants.models import Consent

    rt.check(
        "Ben",
        "DriveSure's consent is revoked, the others stand",
        Consent.objects.get(pk=consents["drivesure"]).status == "revoked"
        and all(Consent.objects.get(pk=consents[s]).status == "granted" for s in ("quickfix", "trackguard")),
    )
    leaks, secrets = _autowerk_leaks(rt, gw)
    with rt.api("trackguard") as c:  # the control: the search finds what an owner may see
        own = c.get("/orgs/trackguard/key-sets/", params={"limit": 500}).text.upper()
    control = any(x in own for x in secrets)
    rt.check(
        "AutoWerk",
        "the car maker sees no provider's keys (KCVs) or application data",
        not leaks and len(secrets) >= 8 and control,
        "; ".join(leaks)[:300] or f"{len(secrets)} values searched; the control search found: {control}",
    )


def _autowerk_leaks(rt: Runtime, gw: Gateway) -> tuple[list[str], set[str]]:
    """What of the providers' secrets shows in any of AutoWerk's API views of its car: the KCVs
    of the providers' key sets, their personalisation data, their key sets."""
    from keys.models import KeySet

    secrets: set[str] = set()
    for ks in KeySet.objects.filter(security_domain__secure_element__device_id=gw.device_id).exclude(
        security_domain__owner__slug="autowerk"
    ):
        secrets |= {str(k).upper() for k in ks.kcvs.values() if k}
    for data in (TRACKER_DATA, INSURER_DATA):
        secrets |= {v for v in data.values() if len(v) > 4}
    views = [
        f"/orgs/autowerk/devices/{gw.device_id}/",
        f"/orgs/autowerk/devices/{gw.device_id}/jobs/?limit=200",
        "/orgs/autowerk/key-sets/?limit=500",
        "/orgs/autowerk/audit/?limit=500",
        "/orgs/autowerk/secure-elements/?limit=500",
    ]
    leaks: list[str] = []
    bodies: dict[str, str] = {}
    with rt.api("autowerk") as c:
        for path in views:
            r = c.get(path)
            bodies[path] = r.text
        for job in (
            c.get(f"/orgs/autowerk/devices/{gw.device_id}/jobs/", params={"limit": 200})
            .json()
            .get("results", [])
        ):
            r = c.get(f"/orgs/autowerk/jobs/{job['id']}/")
            bodies[f"job {job['kind']}"] = r.text
    for where, text in bodies.items():
        upper = text.upper()
        for s in secrets:
            if s in upper:
                leaks.append(f"{where} shows {s[:8]}…")
    return leaks, secrets


# --- healthcare -------------------------------------------------------------------------------

NORTH_SD = "A00000015153504E43"
SOUTH_SD = "A00000015153505343"
NORTH_APP = "F0544553534D01014E43"
SOUTH_APP = "F0544553534D01015343"
KIT_APP = "F0544553534D01014B54"  # CareKit's own self-test application, in the ISD
ISD = "A000000151000000"


def _clinic_data(name: str) -> dict[str, str]:
    """A clinic's server address (DGI 0101) and public key (DGI 0102: an uncompressed P-256 point)."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    point = key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint).hex().upper()
    return {"0101": _hex(f"https://rpm.{name}.test/ingest"), "0102": point}


def healthcare(rt: Runtime) -> None:
    """A leased remote-monitoring kit moving from one clinic to another."""
    rt.say("Healthcare: CareKit leases Cara's monitoring kit to a clinic; later to another one.")
    with rt.step("MediGate builds a kit for Cara; CareKit enrols its secure element; its agent starts") as o:
        gw = rt.gateway(
            prefix="GW", kind="medical_gateway", maker="medigate", issuer="carekit", subscriber="patient-cara"
        )
        o["text"] = f"kit {gw.serial} online"
    with rt.step("CareKit leases the kit to North Clinic: a contract that needs no consent from Cara") as o:
        _sign(
            gw,
            "patient-cara",
            "northclinic",
            "Remote patient monitoring",
            NORTH_SD,
            switch_allowed=False,
            consent_required=False,
        )
        o["text"] = "lease in force"
    with rt.step("CareKit installs its kit self-test application in the ISD and personalises the CASD") as o:
        _install(rt, "carekit", gw, ISD, KIT_APP)
        rt.run_job("carekit", gw, "casd_personalize", {})
        o["text"] = "self-test app and CASD ready"
    with rt.step(
        "The TSM creates North Clinic's SD for CareKit; the clinic installs its app (with the TSM's first keys)"
    ) as o:
        rt.run_job(
            "trustsm", gw, "create_security_domain", {"aid": NORTH_SD, "owner": "northclinic"}, "carekit"
        )
        _install(rt, "northclinic", gw, NORTH_SD, NORTH_APP)
        o["text"] = "SD and monitoring app on the kit"
    north = rt.tooling("northclinic")
    north_data = _clinic_data("northclinic")
    with rt.step(
        "North Clinic's own tooling loads its keys (CA-certified package): the TSM's keys are replaced"
    ) as o:
        north.ready()
        loaded = north.load_keys(gw.device_id, NORTH_SD)
        o["text"] = f"receipt verified: {loaded.get('receipt_verified')}"
    _check_provider_custody(
        rt,
        "North Clinic",
        gw,
        NORTH_SD,
        "Tessera holds no key of its SD: the TSM's first keys replaced by its own (provider's custody)",
    )
    with rt.step("North Clinic provisions its server address and public key in its own session") as o:
        north.personalize(gw.device_id, NORTH_SD, NORTH_APP, north_data)
        o["text"] = "monitoring app personalised"
    with rt.step("Every agent stops a moment; the kit's card is read") as o:
        rt.stop_all()
        before = rt.card(rt.gateways[0])
        rt.start_agent(gw)
        o["text"] = (
            f"North Clinic's data on the card: {card_personalisation(before, NORTH_APP) == north_data}"
        )
    rt.check(
        "North Clinic",
        "its SD holds its own keys and its app its server address and public key",
        card_personalisation(before, NORTH_APP) == north_data and NORTH_SD in card_sds(before),
    )
    with rt.step("CareKit re-leases the kit to South Clinic: a switch the lessor starts, Cara informed") as o:
        sw = _start_switch(rt, "carekit", gw, "southclinic", SOUTH_SD, "portal")
        _switch_completed(rt, "carekit", sw["id"])
        o["text"] = "South Clinic's SD and keys in place, North Clinic's SD deleted"
    south_data = _clinic_data("southclinic")
    with rt.step("South Clinic installs its monitoring app and provisions its server address and key") as o:
        _install(rt, "southclinic", gw, SOUTH_SD, SOUTH_APP)
        _personalize(rt, "southclinic", gw, SOUTH_SD, SOUTH_APP, south_data)
        o["text"] = "personalised"
    registry = _read_back(rt, gw, "kit")

    sds, apps = card_sds(registry), card_apps(registry)
    rt.check(
        "North Clinic",
        "its SD, keys, app and data are gone from the kit",
        NORTH_SD not in sds and NORTH_APP not in apps and not card_personalisation(registry, NORTH_APP),
        str(sorted(sds)),
    )
    rt.check(
        "South Clinic",
        "its SD with its keys and its personalised app are on the kit",
        SOUTH_SD in sds
        and apps.get(SOUTH_APP) == SOUTH_SD
        and card_personalisation(registry, SOUTH_APP) == south_data
        and bool(card_kvns(registry, SOUTH_SD)),
    )
    live = _live_keysets(gw, SOUTH_SD)
    rt.check(
        "South Clinic",
        "the database records its key set on the card's KVN",
        bool(live) and {k.kvn for k in live} <= set(card_kvns(registry, SOUTH_SD)),
        str([k.kvn for k in live]),
    )
    rt.check("CareKit", "its self-test app stays in the ISD", apps.get(KIT_APP) == ISD, str(apps))
    db = _db_sds(gw)
    rt.check(
        "CareKit",
        "the database agrees with the kit (SDs and owners)",
        sorted(db) == sorted(sds) and db.get(SOUTH_SD) == "southclinic",
        f"db {db}",
    )

    rt.check(
        "Cara",
        "no job on her kit ever waited for her consent (the lease waives it)",
        _waited_for_consent(gw) == 0,
    )
    events = rt.call("patient-cara", "GET", "/orgs/patient-cara/switches/")["results"]
    seen = [e for e in events if e.get("device") == gw.serial]
    rt.check(
        "Cara",
        "is informed: she sees the switch of her kit",
        bool(seen) and seen[0].get("state") == "completed",
        str(seen)[:200],
    )
    audit = rt.call("patient-cara", "GET", "/orgs/patient-cara/audit/", params={"limit": 200})["results"]
    rt.check(
        "Cara",
        "her audit trail records the change of clinic",
        any("switch" in str(a.get("tag", "")) and gw.serial in str(a) for a in audit),
        f"{len(audit)} events",
    )
    old, new = _contract(gw.device_id, "northclinic"), _contract(gw.device_id, "southclinic")
    rt.check(
        "CareKit",
        "North Clinic's lease ended, South Clinic's in force",
        old is not None and old.status == "ended" and new is not None and new.status == "active",
    )


def _waited_for_consent(gw: Gateway) -> int:
    """How many of the device's jobs ever waited for the subscriber's consent: those waiting now
    and those whose audited state changes start from ``awaiting_consent``."""
    from audit.models import AuditEvent, AuditTag
    from jobs.models import Job

    jobs = [str(pk) for pk in Job.objects.filter(device_id=gw.device_id).values_list("pk", flat=True)]
    waiting = Job.objects.filter(device_id=gw.device_id, state="awaiting_consent").count()
    waited = AuditEvent.objects.filter(
        tag=AuditTag.JOB_STATE, target_id__in=jobs, details__from="awaiting_consent"
    ).count()
    return waiting + waited


STORIES = {"utilities": utilities, "automotive": automotive, "healthcare": healthcare}
