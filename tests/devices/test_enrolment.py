"""Enrolment through the API: devices by their manufacturer, secure elements (with ISD keys) by
their issuer, pairing, batches, suspension."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from django.core.files.uploadedfile import SimpleUploadedFile

from audit.models import AuditEvent
from devices.models import Device, DeviceStatus, SecureElement
from keys.models import KeySet
from keys.services import keyset_static_keys
from tests.conftest import client_for
from tests.support.enrolment import device_row, identity_pem, isd_keys_hex, rsa_pem, se_row

DEVICES = "/api/v1/orgs/owner-sei/devices/"
SES = "/api/v1/orgs/owner-sei/secure-elements/"


def post(world: Any, url: str, body: Any, user: Any = None) -> Any:
    return client_for(user or world.owner_user).post(url, body, format="json")


# --- devices ------------------------------------------------------------------------------------


def test_a_manufacturer_enrols_a_device_with_its_identity_key(world: Any) -> None:
    # given
    pem, key_id = identity_pem()
    # when
    resp = post(
        world, DEVICES, {"serial": "GW-0001", "kind": "meter", "identity_public_key": pem, "key_id": key_id}
    )
    # then
    assert resp.status_code == 201, resp.content
    assert resp.json()["key_id"] == key_id
    device = Device.objects.get(serial="GW-0001")
    assert device.identity_key_id == key_id
    assert device.manufacturer == world.owner
    assert AuditEvent.objects.filter(tag="device:register", target_id=str(device.pk)).exists()


@pytest.mark.parametrize(
    "pem",
    [
        "not a key",
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        "rsa",
        "p384",
    ],
)
def test_an_identity_key_that_is_not_ec_p256_is_a_clear_400(world: Any, pem: str) -> None:
    if pem == "rsa":
        pem = rsa_pem()
    elif pem == "p384":
        pem = identity_pem(ec.SECP384R1())[0]
    resp = post(world, DEVICES, {"serial": "GW-0002", "kind": "meter", "identity_public_key": pem})
    assert resp.status_code == 400
    assert "P-256" in resp.json()["error"]["message"]
    assert not Device.objects.filter(serial="GW-0002").exists()


def test_a_key_id_that_does_not_match_the_key_is_refused(world: Any) -> None:
    pem, _ = identity_pem()
    resp = post(
        world, DEVICES, {"serial": "GW-3", "kind": "meter", "identity_public_key": pem, "key_id": "ab" * 32}
    )
    assert resp.status_code == 400
    assert resp.json()["error"]["fields"] == {"key_id": ["Does not match the key."]}


def test_the_same_identity_key_cannot_be_enrolled_twice(world: Any) -> None:
    pem, _ = identity_pem()
    assert (
        post(world, DEVICES, {"serial": "GW-4", "kind": "meter", "identity_public_key": pem}).status_code
        == 201
    )
    resp = post(world, DEVICES, {"serial": "GW-5", "kind": "meter", "identity_public_key": pem})
    assert resp.status_code == 409
    assert not Device.objects.filter(serial="GW-5").exists()


def test_a_duplicate_serial_is_a_conflict(world: Any) -> None:
    resp = post(world, DEVICES, device_row("MTR-0001"))
    assert resp.status_code == 409
    assert resp.json()["error"]["fields"] == {"serial": ["Already registered."]}


def test_an_organisation_that_is_not_a_manufacturer_may_not_enrol_devices(world: Any) -> None:
    resp = post(world, "/api/v1/orgs/provider-sp/devices/", device_row("P-1"), user=world.provider_user)
    assert resp.status_code == 400
    assert not Device.objects.filter(serial="P-1").exists()


def test_an_auditor_may_not_enrol_devices(world: Any) -> None:
    resp = post(world, DEVICES, device_row("A-1"), user=world.owner_auditor)
    assert resp.status_code == 403


def test_the_collaborator_cannot_enrol_on_the_owners_behalf(world: Any) -> None:
    resp = post(
        world,
        "/api/v1/orgs/collab-tsm/devices/?on_behalf_of=owner-sei",
        device_row("C-1"),
        world.collaborator_user,
    )
    assert resp.status_code == 404


# --- secure elements with their ISD keys ------------------------------------------------------------


def test_an_issuer_registers_an_se_with_its_isd_key_set_sealed_in_its_vault(world: Any) -> None:
    # given
    row = se_row("SE-0001")
    # when
    resp = post(world, SES, row)
    # then
    assert resp.status_code == 201, resp.content
    body = resp.json()
    se = SecureElement.objects.get(serial="SE-0001")
    isd = se.security_domains.get(is_isd=True)
    assert body["isd"]["aid"] == "A000000151000000" == isd.aid
    (ks_out,) = body["isd"]["key_sets"]
    keyset = KeySet.objects.get(security_domain=isd)
    assert (keyset.kvn, keyset.status, keyset.sequence_counter, keyset.i_param) == (0x30, "active", 5, 0x70)
    assert ks_out["kcv"] == {"enc": keyset.kcv_enc, "mac": keyset.kcv_mac, "dek": keyset.kcv_dek}
    opened = keyset_static_keys(keyset=keyset)
    assert opened.enc.hex() == row["isd_keys"]["enc"]
    assert body["pairing"] == {"device": None, "state": "none"}


@pytest.mark.parametrize(
    "change, field",
    [
        ({"isd_keys": {"enc": "00" * 16, "mac": "00" * 16, "dek": "00" * 15}}, "isd_keys.dek"),
        ({"isd_keys": {"enc": "00" * 16, "mac": "00" * 24, "dek": "00" * 16}}, "isd_keys"),
        ({"isd_keys": {"enc": "zz" * 16, "mac": "00" * 16, "dek": "00" * 16}}, "isd_keys.enc"),
        ({"isd_keys": {"enc": "00" * 20, "mac": "00" * 20, "dek": "00" * 20}}, "isd_keys.enc"),
        ({"isd_aid": "A0000001"}, "isd_aid"),
        ({"isd_aid": "A0" * 17}, "isd_aid"),
        ({"isd_aid": "A00000015"}, "isd_aid"),
        ({"kvn": 0}, "kvn"),
        ({"kvn": 0x80}, "kvn"),
        ({"i_param": 256}, "i_param"),
        ({"sequence_counter": 0x1000000}, "sequence_counter"),
        ({"cplc": "xyz"}, "cplc"),
        ({"kind": "hsm"}, "kind"),
        ({"isd_keys": {**isd_keys_hex(), "kvn": 0x31}}, "isd_keys"),
    ],
)
def test_bad_se_input_is_a_400_naming_the_field_and_writes_nothing(
    world: Any, change: dict, field: str
) -> None:
    before = (SecureElement.objects.count(), KeySet.objects.count())
    resp = post(world, SES, {**se_row("SE-BAD"), **change})
    assert resp.status_code == 400, resp.content
    assert field in resp.json()["error"]["fields"], resp.json()
    assert (SecureElement.objects.count(), KeySet.objects.count()) == before


def test_all_three_aes_key_lengths_are_accepted(world: Any) -> None:
    for n, length in enumerate((16, 24, 32)):
        resp = post(world, SES, se_row(f"SE-L{n}", isd_keys=isd_keys_hex(length)))
        assert resp.status_code == 201, resp.content
        assert resp.json()["isd"]["key_sets"][0]["key_length"] == length


def test_a_duplicate_se_serial_is_a_conflict_and_keeps_no_key_set(world: Any) -> None:
    assert post(world, SES, se_row("SE-D")).status_code == 201
    before = KeySet.objects.count()
    resp = post(world, SES, se_row("SE-D"))
    assert resp.status_code == 409
    assert KeySet.objects.count() == before


def test_only_an_se_issuer_registers_secure_elements(world: Any) -> None:
    resp = post(world, "/api/v1/orgs/stranger-sp/secure-elements/", se_row("SE-S"), user=world.stranger_user)
    assert resp.status_code == 400
    assert not SecureElement.objects.filter(serial="SE-S").exists()


# --- pairing ------------------------------------------------------------------------------------------


def test_a_device_and_an_se_that_name_each_other_are_paired_whichever_comes_first(world: Any) -> None:
    # device first, then the SE naming it
    post(world, DEVICES, device_row("GW-P1", se_issuer="owner-sei", se_serial="SE-P1"))
    resp = post(world, SES, se_row("SE-P1", device={"manufacturer": "owner-sei", "serial": "GW-P1"}))
    assert resp.json()["pairing"] == {"device": "GW-P1", "state": "paired"}
    # SE first, then the device naming it
    resp = post(world, SES, se_row("SE-P2", device={"manufacturer": "owner-sei", "serial": "GW-P2"}))
    assert resp.json()["pairing"] == {"device": None, "state": "pending"}
    post(world, DEVICES, device_row("GW-P2", se_issuer="owner-sei", se_serial="SE-P2"))
    assert SecureElement.objects.get(serial="SE-P2").device.serial == "GW-P2"
    assert AuditEvent.objects.filter(tag="device:pair").count() == 2


def test_a_one_sided_claim_never_pairs(world: Any) -> None:
    # the device names the SE, the SE names nobody
    post(world, DEVICES, device_row("GW-O1", se_issuer="owner-sei", se_serial="SE-O1"))
    post(world, SES, se_row("SE-O1"))
    assert SecureElement.objects.get(serial="SE-O1").device is None
    # the SE names a device that names another SE
    post(world, DEVICES, device_row("GW-O2", se_issuer="owner-sei", se_serial="SE-OTHER"))
    post(world, SES, se_row("SE-O2", device={"manufacturer": "owner-sei", "serial": "GW-O2"}))
    assert SecureElement.objects.get(serial="SE-O2").device is None


def test_a_stranger_issuer_cannot_attach_its_se_to_the_owners_device(world: Any) -> None:
    # given the stranger becomes an SE issuer and names the owner's device
    world.stranger.roles = [*world.stranger.roles, "SEI"]
    world.stranger.save()
    resp = post(
        world,
        "/api/v1/orgs/stranger-sp/secure-elements/",
        se_row("SE-X", device={"manufacturer": "owner-sei", "serial": "MTR-0001"}),
        user=world.stranger_user,
    )
    # then nothing is linked, and the answer says the same as for a device that does not exist
    assert resp.status_code == 201
    assert resp.json()["pairing"] == {"device": None, "state": "pending"}
    assert (
        client_for(world.stranger_user)
        .get(f"/api/v1/orgs/stranger-sp/devices/{world.device.pk}/")
        .status_code
        == 404
    )


# --- suspension ----------------------------------------------------------------------------------------


def test_the_manufacturer_suspends_and_reactivates_a_device(world: Any) -> None:
    url = f"{DEVICES}{world.device.pk}/"
    resp = post(world, url + "suspend/", {})
    assert resp.status_code == 200 and resp.json()["status"] == "suspended"
    assert post(world, url + "suspend/", {}).status_code == 409
    resp = post(world, url + "reactivate/", {})
    assert resp.status_code == 200 and resp.json()["status"] == "active"
    world.device.refresh_from_db()
    assert world.device.status == DeviceStatus.ACTIVE
    tags = list(AuditEvent.objects.filter(target_id=str(world.device.pk)).values_list("tag", flat=True))
    assert "device:suspend" in tags and "device:reactivate" in tags


def test_only_the_manufacturer_suspends_a_device(world: Any) -> None:
    # the subscriber sees the device, but did not make it
    world.subscriber.roles = ["SS", "DM"]
    world.subscriber.save()
    resp = post(
        world, f"/api/v1/orgs/home-ss/devices/{world.device.pk}/suspend/", {}, user=world.subscriber_user
    )
    assert resp.status_code == 403
    world.device.refresh_from_db()
    assert world.device.status == DeviceStatus.ACTIVE


# --- device detail shows key sets as KCVs, to their owner only -----------------------------------------


def test_the_device_detail_shows_the_isd_key_sets_as_kcvs_to_the_owner_only(world: Any) -> None:
    from keys.services import keyset_import, static_keys_from_hex
    from tenants.access import resolve_actor

    keys = isd_keys_hex()
    keyset_import(
        actor=resolve_actor(world.owner_user, "owner-sei"),
        security_domain=world.isd,
        kvn=0x30,
        keys=static_keys_from_hex(**keys),
    )
    body = client_for(world.owner_user).get(f"{DEVICES}{world.device.pk}/").json()
    isd = next(sd for sd in body["secure_elements"][0]["security_domains"] if sd["is_isd"])
    assert [k["kvn"] for k in isd["key_sets"]] == [0x30]
    assert set(isd["key_sets"][0]["kcv"]) == {"enc", "mac", "dek"}
    text = json.dumps(body).lower()
    assert all(v not in text for v in keys.values())
    # the provider sees the device and the ISD, but not the issuer's key sets
    body = client_for(world.provider_user).get(f"/api/v1/orgs/provider-sp/devices/{world.device.pk}/").json()
    for se in body["secure_elements"]:
        for sd in se["security_domains"]:
            assert sd["key_sets"] == []


# --- batches -----------------------------------------------------------------------------------------


def upload(world: Any, url: str, name: str, content: bytes, content_type: str = "text/csv") -> Any:
    return client_for(world.owner_user).post(
        url, {"file": SimpleUploadedFile(name, content, content_type=content_type)}, format="multipart"
    )


def csv_text(rows: list[list[str]]) -> bytes:
    import csv
    import io

    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue().encode()


def test_a_device_batch_as_json_creates_the_valid_rows_and_reports_the_rest(world: Any) -> None:
    rows = [
        device_row("B-1"),
        {"serial": "B-2", "kind": "toaster"},
        device_row("B-3"),
        device_row("B-1"),
        "x",
    ]
    resp = post(world, DEVICES + "batch/", {"devices": rows})
    assert resp.status_code == 200, resp.content
    body = resp.json()
    assert (body["created"], body["failed"]) == (2, 3)
    assert [r["status"] for r in body["rows"]] == ["created", "error", "created", "error", "error"]
    assert [r["row"] for r in body["rows"]] == [1, 2, 3, 4, 5]
    assert "kind" in body["rows"][1]["error"]
    assert "Already registered" in body["rows"][3]["error"] or "already" in body["rows"][3]["error"]
    assert set(Device.objects.filter(serial__startswith="B-").values_list("serial", flat=True)) == {
        "B-1",
        "B-3",
    }


def test_a_device_batch_as_a_csv_file_with_multiline_pem_keys(world: Any) -> None:
    pem1, id1 = identity_pem()
    pem2, _ = identity_pem()
    content = csv_text(
        [
            ["serial", "kind", "identity_public_key", "key_id"],
            ["CSV-1", "meter", pem1, id1],
            ["CSV-2", "obu", pem2, ""],
            ["CSV-3", "meter", "garbage", ""],
        ]
    )
    resp = upload(world, DEVICES + "batch/", "devices.csv", content)
    assert resp.status_code == 200, resp.content
    assert [r["status"] for r in resp.json()["rows"]] == ["created", "created", "error"]
    assert Device.objects.get(serial="CSV-1").identity_key_id == id1


def test_a_device_batch_as_a_json_file(world: Any) -> None:
    content = json.dumps([device_row("JF-1"), device_row("JF-2")]).encode()
    resp = upload(world, DEVICES + "batch/", "devices.json", content, "application/json")
    assert resp.status_code == 200, resp.content
    assert resp.json()["created"] == 2


@pytest.mark.parametrize(
    "content",
    [
        b'serial,kind,identity_public_key\n"unterminated,meter,x\n',
        b"serial,colour\nA,red\n",
        b"kind\nmeter\n",
        b"\xff\xfe\x00garbage",
        b"serial,kind,identity_public_key\n",
        b'{"devices": [',
        b'{"widgets": []}',
    ],
    ids=[
        "unterminated-quote",
        "unknown-column",
        "missing-column",
        "not-utf8",
        "header-only",
        "bad-json",
        "wrong-key",
    ],
)
def test_a_malformed_batch_file_is_a_400_and_writes_nothing(world: Any, content: bytes) -> None:
    before = Device.objects.count()
    resp = upload(world, DEVICES + "batch/", "devices.csv", content)
    assert resp.status_code == 400, resp.content
    assert resp.json()["error"]["code"] in ("invalid_batch", "invalid")
    assert Device.objects.count() == before


def test_a_csv_row_with_too_many_fields_is_reported_not_fatal(world: Any) -> None:
    pem, _ = identity_pem()
    content = csv_text(
        [["serial", "kind", "identity_public_key"], ["R-1", "meter", pem], ["R-2", "meter", pem, "extra"]]
    )
    resp = upload(world, DEVICES + "batch/", "d.csv", content)
    assert resp.status_code == 200
    assert [r["status"] for r in resp.json()["rows"]] == ["created", "error"]


def test_an_oversized_batch_file_is_refused_with_413(world: Any) -> None:
    content = b"serial,kind,identity_public_key\n" + b"X" * (2 * 1024 * 1024)
    before = Device.objects.count()
    resp = upload(world, DEVICES + "batch/", "big.csv", content)
    assert resp.status_code == 413
    assert resp.json()["error"]["code"] == "batch_too_large"
    assert Device.objects.count() == before


def test_more_than_ten_thousand_rows_are_refused_with_413(world: Any) -> None:
    content = b"serial,kind,identity_public_key\n" + b"S,meter,x\n" * 10_001
    resp = upload(world, DEVICES + "batch/", "many.csv", content)
    assert resp.status_code == 413


def test_a_batch_where_no_row_is_valid_is_a_400_with_the_report(world: Any) -> None:
    resp = post(world, DEVICES + "batch/", {"devices": [{"serial": "N-1"}, 7]})
    assert resp.status_code == 400
    rows = resp.json()["error"]["fields"]["rows"]
    assert [r["status"] for r in rows] == ["error", "error"]


def test_an_se_batch_as_csv_imports_each_valid_row_with_its_keys(world: Any) -> None:
    good = isd_keys_hex()
    content = csv_text(
        [
            [
                "serial",
                "isd_aid",
                "enc",
                "mac",
                "dek",
                "kvn",
                "i_param",
                "sequence_counter",
                "device_manufacturer",
                "device_serial",
            ],
            [
                "SB-1",
                "A000000151000000",
                good["enc"],
                good["mac"],
                good["dek"],
                "0x30",
                "0x70",
                "12",
                "owner-sei",
                "MTR-9",
            ],
            ["SB-2", "A000000151000000", "00" * 16, "00" * 16, "00" * 8, "48", "", "", "", ""],
            ["SB-3", "A000000151000000", good["enc"], good["mac"], good["dek"], "300", "", "", "", ""],
        ]
    )
    resp = upload(world, SES + "batch/", "ses.csv", content)
    assert resp.status_code == 200, resp.content
    assert [r["status"] for r in resp.json()["rows"]] == ["created", "error", "error"]
    ks = KeySet.objects.get(security_domain__secure_element__serial="SB-1")
    assert (ks.kvn, ks.i_param, ks.sequence_counter) == (0x30, 0x70, 12)
    assert not SecureElement.objects.filter(serial__in=["SB-2", "SB-3"]).exists()
    assert SecureElement.objects.get(serial="SB-1").device_serial == "MTR-9"


def test_an_se_batch_as_json_body(world: Any) -> None:
    resp = post(
        world, SES + "batch/", {"secure_elements": [se_row("SJ-1"), se_row("SJ-1"), se_row("SJ-2", kvn=0)]}
    )
    assert resp.status_code == 200
    assert [r["status"] for r in resp.json()["rows"]] == ["created", "error", "error"]
    assert KeySet.objects.filter(security_domain__secure_element__serial="SJ-1").count() == 1


def test_a_stranger_cannot_batch_into_the_owners_organisation(world: Any) -> None:
    resp = post(world, DEVICES + "batch/", {"devices": [device_row("ST-1")]}, user=world.stranger_user)
    assert resp.status_code == 404
    assert not Device.objects.filter(serial="ST-1").exists()


def test_suspending_a_device_is_seen_at_once_by_the_agent_endpoints_identity_cache(
    world: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from devices.identity import resolve_identity

    # given an enrolled device whose identity the agent endpoint has cached
    pem, key_id = identity_pem()
    resp = post(world, DEVICES, {"serial": "GW-C", "kind": "meter", "identity_public_key": pem})
    assert resolve_identity(key_id).status == "active"
    # when its manufacturer suspends it
    with django_capture_on_commit_callbacks(execute=True):
        resp = post(world, f"{DEVICES}{resp.json()['id']}/suspend/", {})
    assert resp.status_code == 200
    # then the next signed request sees the suspension
    assert resolve_identity(key_id).status == "suspended"
