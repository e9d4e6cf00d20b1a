"""Bad input never reaches the database and never makes a 500 (issue 2 item 6).

Every POST/PATCH/PUT endpoint of the API is found in the URL configuration and must have an entry
in ``ENDPOINTS``; each gets the same battery: malformed JSON, non-objects, wrong types, unknown
fields, over-long strings, invalid short names, characters no database stores, empty bodies.
Each answer is a 4xx ``{"error": {"code", "message"}}`` and the database is unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.db import transaction
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from tenants.models import Membership, Organisation, OrgStatus
from tests import factories as f
from tests.conftest import client_for
from tests.support.db import changed_counts, row_counts
from tests.support.enrolment import device_row, se_row
from tests.support.routes import all_routes

STR, SLUG, EMAIL, CHOICE, LIST, DICT, DATETIME = "str", "slug", "email", "choice", "list", "dict", "datetime"


@dataclass(frozen=True)
class Endpoint:
    method: str
    url: Callable[[Any], str]  # world → path
    caller: str  # "anonymous", "owner", "operator", "provider" (an SP), "subscriber", "ca" (a Controlling Authority)
    fields: dict[str, str]  # name → kind
    valid: Callable[[Any], dict[str, Any]] = field(default=lambda w: {})
    everything_optional: bool = False  # an empty body is a valid request

    def client(self, world: Any) -> Any:
        if self.caller == "anonymous":
            return APIClient()
        if self.caller == "operator":
            return client_for(f.UserFactory(username="platform-op", is_staff=True, is_superuser=False))
        if self.caller == "provider":
            return client_for(world.provider_user)
        if self.caller == "subscriber":
            return client_for(world.subscriber_user)
        if self.caller == "ca":
            from tests.support.ca import ca_user

            return client_for(ca_user())
        return client_for(world.owner_user)


def _pending(world: Any) -> Organisation:
    return Organisation.objects.get_or_create(
        slug="pending-app",
        defaults={
            "name": "Pending",
            "status": OrgStatus.PENDING,
            "roles": ["SP"],
            "contact_email": "p@example.test",
        },
    )[0]


def _auditor_membership(world: Any) -> Membership:
    return Membership.objects.get(org=world.owner, user=world.owner_auditor)


def _open_invitation(world: Any) -> Any:
    from tenants import services
    from tenants.access import resolve_actor

    return services.invitation_create(
        actor=resolve_actor(world.owner_user, "owner-sei"), email="bad-input@example.test", role="operator"
    )


ENDPOINTS: dict[tuple[str, str], Endpoint] = {
    ("api:auth-token", "post"): Endpoint(
        "post",
        lambda w: "/api/v1/auth/token/",
        "anonymous",
        {"username": STR, "password": STR},
        lambda w: {"username": "owner-user", "password": f.PASSWORD},
    ),
    ("api:application-list", "post"): Endpoint(
        "post",
        lambda w: "/api/v1/applications/",
        "anonymous",
        {"name": STR, "slug": SLUG, "roles": LIST, "contact_name": STR, "contact_email": EMAIL, "note": STR},
        lambda w: {
            "name": "Acme",
            "slug": "acme",
            "roles": ["SP"],
            "contact_name": "A",
            "contact_email": "a@example.test",
        },
    ),
    ("api:application-approve", "post"): Endpoint(
        "post",
        lambda w: f"/api/v1/applications/{_pending(w).pk}/approve/",
        "operator",
        {"reason": STR},
        everything_optional=True,
    ),
    ("api:application-reject", "post"): Endpoint(
        "post",
        lambda w: f"/api/v1/applications/{_pending(w).pk}/reject/",
        "operator",
        {"reason": STR},
        everything_optional=True,
    ),
    ("api:invitation-accept", "post"): Endpoint(
        "post",
        lambda w: "/api/v1/invitations/accept/",
        "anonymous",
        {"token": STR, "username": STR, "password": STR, "email": EMAIL},
        lambda w: {
            "token": _open_invitation(w)[1],
            "username": "newcomer",
            "password": "a-long-passphrase-9",
        },
    ),
    ("api:member-detail", "patch"): Endpoint(
        "patch",
        lambda w: f"/api/v1/orgs/owner-sei/members/{_auditor_membership(w).pk}/",
        "owner",
        {"role": CHOICE},
        lambda w: {"role": "operator"},
    ),
    ("api:invitation-list", "post"): Endpoint(
        "post",
        lambda w: "/api/v1/orgs/owner-sei/invitations/",
        "owner",
        {"email": EMAIL, "role": CHOICE},
        lambda w: {"email": "someone@example.test", "role": "operator"},
    ),
    ("api:invitation-revoke", "post"): Endpoint(
        "post",
        lambda w: f"/api/v1/orgs/owner-sei/invitations/{_open_invitation(w)[0].pk}/revoke/",
        "owner",
        {},
        everything_optional=True,
    ),
    ("api:mandate-list", "post"): Endpoint(
        "post",
        lambda w: "/api/v1/orgs/owner-sei/mandates/",
        "owner",
        {"grantee": SLUG, "actions": LIST, "scope": DICT, "valid_from": DATETIME, "valid_until": DATETIME},
        lambda w: {"grantee": "stranger-sp", "actions": ["devices.view"]},
    ),
    ("api:mandate-revoke", "post"): Endpoint(
        "post",
        lambda w: f"/api/v1/orgs/owner-sei/mandates/{w.mandate.pk}/revoke/",
        "owner",
        {},
        everything_optional=True,
    ),
}


def _suspended_device_url(world: Any) -> str:
    from devices.models import Device

    Device.objects.filter(pk=world.device.pk).update(status="suspended")
    return f"/api/v1/orgs/owner-sei/devices/{world.device.pk}/reactivate/"


_DEVICE_FIELDS = {
    "serial": STR,
    "kind": CHOICE,
    "identity_public_key": STR,
    "key_id": STR,
    "se_issuer": SLUG,
    "se_serial": STR,
    "end_of_service": DATETIME,
}
_SE_FIELDS = {
    "serial": STR,
    "kind": CHOICE,
    "cplc": STR,
    "isd_aid": STR,
    "isd_keys": DICT,
    "device": DICT,
}
ENDPOINTS.update(
    {
        ("api:device-list", "post"): Endpoint(
            "post",
            lambda w: "/api/v1/orgs/owner-sei/devices/",
            "owner",
            _DEVICE_FIELDS,
            lambda w: device_row("NEW-0001"),
        ),
        ("api:device-batch", "post"): Endpoint(
            "post",
            lambda w: "/api/v1/orgs/owner-sei/devices/batch/",
            "owner",
            {"devices": LIST},
            lambda w: {"devices": [device_row("NEW-0001")]},
        ),
        ("api:device-suspend", "post"): Endpoint(
            "post",
            lambda w: f"/api/v1/orgs/owner-sei/devices/{w.device.pk}/suspend/",
            "owner",
            {},
            everything_optional=True,
        ),
        ("api:device-detail", "patch"): Endpoint(
            "patch",
            lambda w: f"/api/v1/orgs/owner-sei/devices/{w.device.pk}/",
            "owner",
            {"end_of_service": DATETIME},
            lambda w: {"end_of_service": "2041-06-30"},
        ),
        ("api:device-reactivate", "post"): Endpoint(
            "post", _suspended_device_url, "owner", {}, everything_optional=True
        ),
        ("api:secure-element-list", "post"): Endpoint(
            "post",
            lambda w: "/api/v1/orgs/owner-sei/secure-elements/",
            "owner",
            _SE_FIELDS,
            lambda w: se_row("SE-NEW-1", device={"manufacturer": "owner-sei", "serial": "MTR-0009"}),
        ),
        ("api:secure-element-batch", "post"): Endpoint(
            "post",
            lambda w: "/api/v1/orgs/owner-sei/secure-elements/batch/",
            "owner",
            {"secure_elements": LIST},
            lambda w: {"secure_elements": [se_row("SE-NEW-1")]},
        ),
    }
)


def _queued_job_url(world: Any) -> str:
    from jobs.models import Job

    job = Job.objects.create(
        kind="read_status",
        device=world.device,
        secure_element=world.se,
        target_sd=world.isd,
        target_aid=world.isd.aid,
        requested_by=world.owner,
        beneficiary=world.owner,
        params={"sd": world.isd.aid},
    )
    return f"/api/v1/orgs/owner-sei/jobs/{job.pk}/cancel/"


ENDPOINTS.update(
    {
        ("api:device-jobs", "post"): Endpoint(
            "post",
            lambda w: f"/api/v1/orgs/owner-sei/devices/{w.device.pk}/jobs/",
            "owner",
            {"kind": CHOICE, "params": DICT, "mode": CHOICE},
            lambda w: {"kind": "read_status", "params": {}},
        ),
        ("api:job-cancel", "post"): Endpoint("post", _queued_job_url, "owner", {}, everything_optional=True),
        ("api:job-input", "post"): Endpoint(
            "post",
            lambda w: _awaiting_job(w)[0],
            "owner",
            {"commands": LIST, "kvn": CHOICE, "key_length": CHOICE, "kcvs": DICT},
            lambda w: _awaiting_job(w)[1],
        ),
    }
)


def _awaiting_job(world: Any) -> tuple[str, dict[str, Any]]:
    """A load_keys_scp11 job between its rounds, and a round 2 the relay accepts (its MACs are
    the card's to check: here any 8 bytes)."""
    import os

    from gp import keydelivery
    from jobs.models import Job

    job = Job.objects.filter(kind="load_keys_scp11", state="awaiting_input").first() or Job.objects.create(
        kind="load_keys_scp11",
        state="awaiting_input",
        device=world.device,
        secure_element=world.se,
        target_sd=world.isd,
        target_aid=world.isd.aid,
        requested_by=world.owner,
        beneficiary=world.owner,
        params={"sd": world.isd.aid, "authenticate": [], "variant": "a"},
    )
    keys = (os.urandom(16), os.urandom(16), os.urandom(16))
    install, store = keydelivery.delivery_commands(
        sd_aid=bytes.fromhex(world.isd.aid), kvn=0x31, keys=keys, dek=os.urandom(16)
    )
    secured = [
        bytes([0x84]) + c[1:4] + bytes([c[4] + 8]) + c[5 : 5 + c[4]] + os.urandom(8) for c in (install, store)
    ]
    control = keydelivery.read_key_set_dgis(store[5 : 5 + store[4]])
    body = {"commands": [c.hex() for c in secured], "kvn": 0x31, "key_length": 16, "kcvs": control.kcvs_hex()}
    return f"/api/v1/orgs/owner-sei/jobs/{job.pk}/input/", body


def _supply_batch(world: Any) -> dict[str, Any]:
    """The owner as an SE supplier named (se.supply) by an SE issuer with an import key, and a
    row wrapped to that key (issue 5 item 6)."""
    import os

    from gp.card.manufacture import batch_record, load_import_public_key
    from gp.card.softcard import SoftCard
    from gp.scp03 import StaticKeys
    from keys import handover
    from tenants.access import resolve_actor
    from tenants.models import OrgRole

    sei = f.OrganisationFactory(slug="supplied-sei", name="Supplied SEI", roles=[OrgRole.SE_ISSUER])
    sei_user = f.MembershipFactory(
        org=sei, user=f.UserFactory(username="supplied-sei-user"), role="owner"
    ).user
    key = handover.import_key_rotate(actor=resolve_actor(sei_user, "supplied-sei"))
    world.owner.roles = [*world.owner.roles, OrgRole.SE_SUPPLIER]
    world.owner.save()
    f.MandateFactory(grantor=sei, grantee=world.owner, actions=["se.supply"])
    card = SoftCard.create(
        None,
        isd_aid=bytes.fromhex("A000000151000000"),
        keys=StaticKeys(os.urandom(16), os.urandom(16), os.urandom(16)),
        key_version=0x30,
    )
    pub = load_import_public_key(handover.import_key_pem(key))
    return {
        "issuer": "supplied-sei",
        "secure_elements": [batch_record(card, import_public_key=pub, sei="supplied-sei")],
    }


def _retiring_import_key(world: Any) -> dict[str, Any]:
    from keys import handover
    from tenants.access import resolve_actor

    actor = resolve_actor(world.owner_user, "owner-sei")
    old = handover.import_key_rotate(actor=actor)
    handover.import_key_rotate(actor=actor)
    return {"fingerprint": old.fingerprint}


ENDPOINTS.update(
    {
        ("api:supply-batch", "post"): Endpoint(
            "post",
            lambda w: "/api/v1/orgs/owner-sei/supply-batches/",
            "owner",
            {"issuer": SLUG, "secure_elements": LIST},
            _supply_batch,
        ),
        ("api:import-key-list", "post"): Endpoint(
            "post", lambda w: "/api/v1/orgs/owner-sei/import-keys/", "owner", {}, everything_optional=True
        ),
        ("api:import-key-retire", "post"): Endpoint(
            "post",
            lambda w: "/api/v1/orgs/owner-sei/import-keys/retire/",
            "owner",
            {"fingerprint": STR},
            _retiring_import_key,
        ),
    }
)


def _csr_url(world: Any) -> str:
    from tests.support.ca import make_ca

    make_ca()
    return "/api/v1/orgs/provider-sp/certificates/csr/"


def _revoke_url(world: Any) -> str:
    from tests.support.ca import casd_certificate_for

    return f"/api/v1/orgs/trust-ca/certificates/{casd_certificate_for(world.se).pk}/revoke/"


def _csr_body(world: Any) -> dict[str, Any]:
    from tests.support.ca import make_csr

    return {"csr": make_csr()[1]}


ENDPOINTS.update(
    {
        ("api:certificate-csr", "post"): Endpoint("post", _csr_url, "provider", {"csr": STR}, _csr_body),
        ("api:certificate-revoke", "post"): Endpoint(
            "post", _revoke_url, "ca", {"reason": CHOICE}, lambda w: {"reason": "key_compromise"}
        ),
    }
)


def _session_keys_url(world: Any) -> str:
    """The provider's SSD with a master key deposited in its vault (docs/session-keys.md §6)."""
    from keys.sessionkeys import master_key_register
    from tenants.access import resolve_actor

    actor = resolve_actor(world.provider_user, "provider-sp")
    master_key_register(actor=actor, security_domain=world.ssd, key=bytes(range(16)))
    return f"/api/v1/orgs/provider-sp/security-domains/{world.ssd.pk}/session-keys/"


ENDPOINTS.update(
    {
        ("api:security-domain-master-key", "post"): Endpoint(
            "post",
            lambda w: f"/api/v1/orgs/provider-sp/security-domains/{w.ssd.pk}/master-key/",
            "provider",
            {"key": STR},
            lambda w: {"key": "00112233445566778899AABBCCDDEEFF"},
        ),
        ("api:security-domain-session-keys", "post"): Endpoint(
            "post",
            _session_keys_url,
            "provider",
            {"service": STR},
            lambda w: {"service": "meter.reading", "epoch": 1},
        ),
    }
)

WRONG_TYPES: dict[str, list[Any]] = {
    STR: [True, [], {"a": 1}, None, ["x"]],
    SLUG: [True, [], {"a": 1}, None, 12],
    EMAIL: [True, [], {"a": 1}, None, 12],
    CHOICE: [True, [], {"a": 1}, None, 12],
    LIST: ["devices.view", 7, {"a": 1}, None, [[]], [None], [{"a": 1}]],
    DICT: [[], "x", 7, True, [["issuer", "x"]]],
    DATETIME: [7, [], "yesterday", True, {}, "2026-02-30T00:00:00Z"],
}
BAD_SLUGS = ["Bad Slug", "-lead", "trail-", "UPPER", "ümlaut", "a" * 51, "", "a_b", "a/b", "../x"]
UNSTORABLE = ["nul\x00byte", "lone\ud800surrogate", "\udfff"]


def _webhook_url(world: Any, suffix: str = "") -> str:
    from notifications.services import webhook_create
    from tenants.access import resolve_actor

    webhook, _secret = webhook_create(
        actor=resolve_actor(world.owner_user, "owner-sei"),
        url="https://hooks.example.test/bad-input",
        event_types=["job.*"],
    )
    return f"/api/v1/orgs/owner-sei/webhooks/{webhook.pk}/{suffix}"


BOOL = "bool"
WRONG_TYPES[BOOL] = ["yes", 1, [], {"a": 1}, None]
_WEBHOOK_FIELDS = {"url": STR, "event_types": LIST, "description": STR}
ENDPOINTS.update(
    {
        ("api:webhook-list", "post"): Endpoint(
            "post",
            lambda w: "/api/v1/orgs/owner-sei/webhooks/",
            "owner",
            _WEBHOOK_FIELDS,
            lambda w: {"url": "https://hooks.example.test/new", "event_types": ["job.*", "consent.*"]},
        ),
        ("api:webhook-detail", "patch"): Endpoint(
            "patch",
            _webhook_url,
            "owner",
            {**_WEBHOOK_FIELDS, "active": BOOL},
            lambda w: {"event_types": ["*"], "active": False},
            everything_optional=True,
        ),
        ("api:webhook-test", "post"): Endpoint(
            "post", lambda w: _webhook_url(w, "test/"), "owner", {}, everything_optional=True
        ),
        ("api:webhook-rotate-secret", "post"): Endpoint(
            "post",
            lambda w: _webhook_url(w, "rotate-secret/"),
            "owner",
            {"expire_previous": BOOL},
            lambda w: {"expire_previous": True},
            everything_optional=True,
        ),
    }
)


DAYS = "days"  # a whole number of days, or null
WRONG_TYPES[DAYS] = [True, [], {"a": 1}, 1.5, -1, "ten"]


def _consent_url(world: Any, suffix: str, status: str = "pending") -> str:
    """A consent of the provider on the world's device, in ``status``, as its subscriber's URL."""
    consent = f.ConsentFactory(
        subscriber=world.subscriber,
        grantee=world.provider,
        device=world.device,
        status=status,
        sd_aid=world.ssd.aid,
        granted_at=None if status == "pending" else timezone.now(),
    )
    return f"/api/v1/orgs/home-ss/consents/{consent.pk}/{suffix}"


ENDPOINTS.update(
    {
        ("api:consent-list", "post"): Endpoint(
            "post",
            lambda w: "/api/v1/orgs/provider-sp/consents/",
            "provider",
            {
                "device": STR,
                "purpose": STR,
                "scopes": LIST,
                "duration_days": DAYS,
                "sd_aid": STR,
                "application_aid": STR,
            },
            lambda w: {
                "device": "MTR-0001",
                "purpose": "Billing",
                "scopes": ["own_security_domain", "readings"],
                "duration_days": 30,
                "sd_aid": "A000000151535041AA",
            },
        ),
        ("api:consent-approve", "post"): Endpoint(
            "post", lambda w: _consent_url(w, "approve/"), "subscriber", {}, everything_optional=True
        ),
        ("api:consent-deny", "post"): Endpoint(
            "post", lambda w: _consent_url(w, "deny/"), "subscriber", {}, everything_optional=True
        ),
        ("api:consent-revoke", "post"): Endpoint(
            "post",
            lambda w: _consent_url(w, "revoke/", status="granted"),
            "subscriber",
            {},
            everything_optional=True,
        ),
    }
)


ENDPOINTS.update(
    {
        # The SE issuer reassigns the subscriber's device (issuer-initiated: always allowed; the new
        # provider's work then waits for the subscriber's consent).
        ("api:switch-list", "post"): Endpoint(
            "post",
            lambda w: "/api/v1/orgs/owner-sei/switches/",
            "owner",
            {
                "device": STR,
                "new_provider": SLUG,
                "service": STR,
                "new_sd_aid": STR,
                "keys_mode": CHOICE,
                "app": DICT,
            },
            lambda w: {"device": "MTR-0001", "new_provider": "stranger-sp", "keys_mode": "portal"},
        ),
    }
)


INT, FRACTION = "int", "fraction"
WRONG_TYPES[INT] = [True, "ten", [], {"a": 1}, None, 1.5, 0, -1]
WRONG_TYPES[FRACTION] = [True, "0.5", [], {"a": 1}, None, 1.5, -0.1]


def _campaign_url(world: Any, suffix: str, state: str = "draft") -> str:
    """A campaign of the owner over its device, in ``state``, as the owner's URL."""
    from campaigns.models import Campaign
    from campaigns.services import campaign_create
    from tenants.access import resolve_actor

    campaign = campaign_create(
        actor=resolve_actor(world.owner_user, "owner-sei"), new_provider="provider-sp", devices=["MTR-0001"]
    )
    Campaign.objects.filter(pk=campaign.pk).update(state=state)
    return f"/api/v1/orgs/owner-sei/campaigns/{campaign.pk}/{suffix}"


ENDPOINTS.update(
    {
        ("api:campaign-list", "post"): Endpoint(
            "post",
            lambda w: "/api/v1/orgs/owner-sei/campaigns/",
            "owner",
            {
                "name": STR,
                "new_provider": SLUG,
                "service": STR,
                "keys_mode": CHOICE,
                "app": DICT,
                "devices": LIST,
                "filter": DICT,
                "groups": LIST,
                "group_size": INT,
                "success_threshold": FRACTION,
                "error_threshold": FRACTION,
                "rate_per_minute": INT,
                "max_in_flight": INT,
                "start": BOOL,
            },
            lambda w: {"new_provider": "provider-sp", "devices": ["MTR-0001"], "group_size": 1},
        ),
        **{
            (f"api:campaign-{op}", "post"): Endpoint(
                "post",
                lambda w, op=op, state=state: _campaign_url(w, f"{op}/", state),
                "owner",
                {},
                everything_optional=True,
            )
            for op, state in (
                ("start", "draft"),
                ("pause", "running"),
                ("resume", "paused"),
                ("cancel", "running"),
            )
        },
    }
)


def write_endpoints() -> list[tuple[str, str]]:
    out = []
    for route in all_routes():
        if route.is_api:
            for method in sorted(route.methods & {"post", "patch", "put"}):
                out.append((route.name, method))
    return out


def test_every_api_write_endpoint_has_a_bad_input_entry() -> None:
    missing = [e for e in write_endpoints() if e not in ENDPOINTS]
    assert not missing, f"add these to ENDPOINTS in tests/api/test_bad_input.py: {missing}"
    stale = [e for e in ENDPOINTS if e not in write_endpoints()]
    assert not stale, f"ENDPOINTS names routes that no longer exist: {stale}"


# --- the cases -----------------------------------------------------------------------------------


def cases_for(ep: Endpoint) -> list[tuple[str, Callable[[dict[str, Any]], bytes | str]]]:
    """(case id, valid payload → raw body) for one endpoint."""
    cases: list[tuple[str, Callable[[dict[str, Any]], bytes | str]]] = [
        ("malformed-json", lambda v: '{"name": '),
        ("truncated-json", lambda v: json.dumps(v)[:-1] if v else '{"x"'),
        ("json-array", lambda v: "[]"),
        ("json-array-of-the-valid-object", lambda v: json.dumps([v])),
        ("json-string", lambda v: '"hello"'),
        ("json-number", lambda v: "42"),
        ("json-null", lambda v: "null"),
        ("nan", lambda v: '{"x": NaN}'),
        ("unknown-field", lambda v: json.dumps({**v, "is_staff": True})),
        ("deeply-nested", lambda v: "[" * 5000 + "]" * 5000),
    ]
    if not ep.everything_optional:
        cases += [("empty-body", lambda v: b""), ("empty-object", lambda v: "{}")]
    for name, kind in ep.fields.items():
        for i, wrong in enumerate(WRONG_TYPES[kind]):
            cases.append((f"{name}-wrong-type-{i}", lambda v, n=name, w=wrong: json.dumps({**v, n: w})))
        if kind in (STR, SLUG, EMAIL, CHOICE):
            cases.append((f"{name}-over-long", lambda v, n=name: json.dumps({**v, n: "a" * 5000})))
            for j, bad in enumerate(UNSTORABLE):
                cases.append((f"{name}-unstorable-{j}", lambda v, n=name, b=bad: json.dumps({**v, n: b})))
        if kind == LIST:
            cases.append(
                (f"{name}-over-long", lambda v, n=name: json.dumps({**v, n: ["devices.view"] * 1000}))
            )
        if kind == DICT:
            cases.append(
                (f"{name}-unstorable", lambda v, n=name: json.dumps({**v, n: {"serials": ["a\x00"]}}))
            )
            cases.append(
                (f"{name}-unstorable-key", lambda v, n=name: json.dumps({**v, n: {"issuer\x00": "x"}}))
            )
        if kind == SLUG:
            for j, bad in enumerate(BAD_SLUGS):
                cases.append((f"{name}-invalid-slug-{j}", lambda v, n=name, b=bad: json.dumps({**v, n: b})))
        if kind == DATETIME:
            for j, bad in enumerate(["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"]):
                cases.append((f"{name}-out-of-range-{j}", lambda v, n=name, b=bad: json.dumps({**v, n: b})))
    return cases


CASES = [(key, case_id, make) for key, ep in ENDPOINTS.items() for case_id, make in cases_for(ep)]


def assert_clean_refusal(resp: Any) -> None:
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.content[:400])
    body = resp.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["code"], str) and body["error"]["code"]
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


@pytest.mark.parametrize("key, case_id, make", CASES, ids=[f"{k[0]}-{k[1]}-{c}" for k, c, _ in CASES])
def test_bad_input_is_refused_with_a_json_error_and_writes_nothing(
    world: Any, key: tuple[str, str], case_id: str, make: Any
) -> None:
    # given a valid request to start from
    ep = ENDPOINTS[key]
    url = ep.url(world)
    client = ep.client(world)
    valid = ep.valid(world)
    role_before = _auditor_membership(world).role
    before = row_counts()
    # when it is spoiled
    body = make(valid)
    resp = getattr(client, ep.method)(url, data=body, content_type="application/json")
    # then it is refused cleanly and nothing changed
    assert_clean_refusal(resp)
    assert not changed_counts(before, row_counts())
    assert _auditor_membership(world).role == role_before


@pytest.mark.parametrize("key", list(ENDPOINTS), ids=[f"{k[0]}-{k[1]}" for k in ENDPOINTS])
def test_the_valid_payload_of_each_entry_is_accepted(world: Any, key: tuple[str, str]) -> None:
    # guards the battery above: each case spoils a request that would otherwise succeed
    ep = ENDPOINTS[key]
    resp = getattr(ep.client(world), ep.method)(ep.url(world), data=ep.valid(world), format="json")
    assert resp.status_code in (200, 201), resp.content[:400]


@pytest.mark.parametrize("key", list(ENDPOINTS), ids=[f"{k[0]}-{k[1]}" for k in ENDPOINTS])
def test_a_body_that_is_not_json_is_refused_as_an_unsupported_media_type(
    world: Any, key: tuple[str, str]
) -> None:
    ep = ENDPOINTS[key]
    url = ep.url(world)
    client = ep.client(world)
    before = row_counts()
    resp = getattr(client, ep.method)(url, data=b"\x00\x01", content_type="application/x-tessera")
    assert resp.status_code == 415
    assert_clean_refusal(resp)
    assert not changed_counts(before, row_counts())


# --- authentication ------------------------------------------------------------------------------


def test_the_right_password_gives_a_token_that_authenticates(world: Any, api_client: Any) -> None:
    resp = api_client.post(
        "/api/v1/auth/token/", {"username": "owner-user", "password": f.PASSWORD}, format="json"
    )
    assert resp.status_code == 200
    token = resp.json()["token"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    resp = client.get("/api/v1/orgs/owner-sei/devices/")
    assert resp.status_code == 200
    assert [d["serial"] for d in resp.json()["results"]] == ["MTR-0001"]
    # the same token again, not a new one per login
    again = api_client.post(
        "/api/v1/auth/token/", {"username": "owner-user", "password": f.PASSWORD}, format="json"
    )
    assert again.json()["token"] == token


@pytest.mark.parametrize(
    "username, password", [("owner-user", "wrong-password"), ("nobody", f.PASSWORD), ("owner-user", "")]
)
def test_a_wrong_password_or_user_is_401_and_says_the_same(
    world: Any, api_client: Any, username: str, password: str
) -> None:
    resp = api_client.post("/api/v1/auth/token/", {"username": username, "password": password}, format="json")
    assert resp.status_code in (400, 401)
    if username != "owner-user" or password:
        assert resp.status_code == 401
        assert resp.json() == {
            "error": {"code": "authentication_failed", "message": "Wrong username or password."}
        }


def test_an_inactive_user_gets_no_token(world: Any, api_client: Any) -> None:
    type(world.owner_user).objects.filter(pk=world.owner_user.pk).update(is_active=False)
    resp = api_client.post(
        "/api/v1/auth/token/", {"username": "owner-user", "password": f.PASSWORD}, format="json"
    )
    assert resp.status_code == 401


@pytest.mark.parametrize("header", ["Token not-a-real-token", "Token ", "Bearer abc", "Token a b"])
def test_a_bad_authorization_header_is_401(world: Any, header: str) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    resp = client.get("/api/v1/orgs/owner-sei/devices/")
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] in ("authentication_failed", "not_authenticated")


# --- paths ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/orgs/owner-sei/devices/not-a-uuid/",
        "/api/v1/orgs/owner-sei/devices/123/",
        "/api/v1/orgs/owner-sei/secure-elements/%00/",
        "/api/v1/orgs/owner-sei/mandates/zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz/",
        "/api/v1/orgs/owner-sei/members/1/",
        "/api/v1/orgs/Owner_SEI!/devices/",
        "/api/v1/orgs/owner-sei/no-such-collection/",
        "/api/v1/orgs/owner-sei/audit/1e3/",
    ],
)
def test_an_invalid_id_in_the_path_is_a_json_404(world: Any, path: str) -> None:
    resp = client_for(world.owner_user).get(path)
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("pk", ["not-a-uuid", "123", "00000000-0000-0000-0000-000000000000"])
def test_an_invalid_application_id_is_a_json_404_for_the_operator(db: Any, pk: str) -> None:
    operator = f.UserFactory(username="platform-op", is_staff=True)
    for suffix in ("", "approve/", "reject/"):
        method = "get" if not suffix else "post"
        resp = getattr(client_for(operator), method)(f"/api/v1/applications/{pk}/{suffix}")
        assert resp.status_code == 404, suffix
        assert resp.json()["error"]["code"] == "not_found"


# --- random JSON ---------------------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=60)
    | st.sampled_from(
        [
            "\x00",
            "\ud800",
            "a\udfffb",
            "devices.view",
            "SP",
            "stranger-sp",
            "9999-12-31T23:59:59-14:00",
            "2026-01-01",
        ]
    )
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)


def shaped(keys: list[str]) -> st.SearchStrategy[Any]:
    """Objects with the endpoint's own keys (random values), so examples get past the first check."""
    return st.fixed_dictionaries({}, optional={k: json_values for k in keys}) | json_values


def never_5xx(client: Any, url: str, payload: Any) -> None:
    sid = transaction.savepoint()
    try:
        resp = client.post(url, data=json.dumps(payload), content_type="application/json")
        assert resp.status_code < 500, (payload, resp.content[:400])
    finally:
        transaction.savepoint_rollback(sid)


HYPOTHESIS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@HYPOTHESIS
@given(payload=shaped(["name", "slug", "roles", "contact_name", "contact_email", "note"]))
def test_random_json_to_the_application_endpoint_never_fails_on_our_side(world: Any, payload: Any) -> None:
    never_5xx(APIClient(), "/api/v1/applications/", payload)


@HYPOTHESIS
@given(payload=shaped(["grantee", "actions", "scope", "valid_from", "valid_until"]))
def test_random_json_to_the_mandate_endpoint_never_fails_on_our_side(world: Any, payload: Any) -> None:
    never_5xx(client_for(world.owner_user), "/api/v1/orgs/owner-sei/mandates/", payload)


@HYPOTHESIS
@given(
    scope=st.fixed_dictionaries(
        {}, optional={"issuer": json_values, "device_kinds": json_values, "serials": json_values}
    ),
    actions=st.lists(
        st.sampled_from(["devices.view", "sd.create", "audit.view"]), min_size=1, max_size=3, unique=True
    ),
)
def test_random_mandate_scopes_never_fail_on_our_side(world: Any, scope: Any, actions: list[str]) -> None:
    never_5xx(
        client_for(world.owner_user),
        "/api/v1/orgs/owner-sei/mandates/",
        {"grantee": "stranger-sp", "actions": actions, "scope": scope},
    )
