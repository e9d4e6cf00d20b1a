"""Registering a TEE (kind "tee"): its ISD is the issuer's name for the token and has no key set,
so the enrolment surfaces take none and refuse one; an SE's enrolment is unchanged (docs/tee-bridge.md §8.1)."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from devices.models import SecureElement
from gp.card.manufacture import batch_record
from keys.models import KeySet
from tests.conftest import client_for
from tests.devices.test_supplier_batch import _import_public_key, _soft_card, _upload, supply  # noqa: F401
from tests.support.enrolment import isd_keys_hex, se_row

SES = "/api/v1/orgs/owner-sei/secure-elements/"


def tee_row(serial: str, **extra: Any) -> dict[str, Any]:
    point = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
    receive = "04" + f"{point.x:064X}" + f"{point.y:064X}"
    return {
        "serial": serial,
        "kind": "tee",
        "isd_aid": "A000000151000000",
        "casd_public_key": receive,
        **extra,
    }


def post(world: Any, body: Any) -> Any:
    return client_for(world.owner_user).post(SES, body, format="json")


def test_a_tee_is_registered_without_an_isd_key_set(world: Any) -> None:
    resp = post(world, tee_row("TEE-1", device={"manufacturer": "owner-sei", "serial": "GW-T1"}))
    assert resp.status_code == 201, resp.content
    body = resp.json()
    assert body["kind"] == "tee" and body["isd"] == {"aid": "A000000151000000", "key_sets": []}
    assert body["pairing"]["state"] == "pending"
    se = SecureElement.objects.get(serial="TEE-1")
    assert se.kind == "tee" and se.security_domains.get(is_isd=True).aid == "A000000151000000"
    assert bytes(se.casd_public_key)  # the token's receive key, kept for the CA and the jobs
    assert not KeySet.objects.filter(security_domain__secure_element=se).exists()


@pytest.mark.parametrize(
    "extra, fields",
    [
        ({"isd_keys": isd_keys_hex(), "kvn": 0x30}, {"isd_keys", "kvn"}),
        ({"isd_keys": isd_keys_hex()}, {"isd_keys"}),
        ({"kvn": 0x30}, {"kvn"}),
        ({"i_param": 0x70, "sequence_counter": 1}, {"i_param", "sequence_counter"}),
    ],
)
def test_isd_keys_for_a_tee_are_refused_and_nothing_is_written(world: Any, extra: dict, fields: set) -> None:
    before = (SecureElement.objects.count(), KeySet.objects.count())
    resp = post(world, tee_row("TEE-K", **extra))
    assert resp.status_code == 400, resp.content
    error = resp.json()["error"]
    assert error["code"] == "isd_keys_not_for_tee"
    assert set(error["fields"]) == fields
    assert (SecureElement.objects.count(), KeySet.objects.count()) == before
    # never the keys themselves in the answer
    for value in extra.get("isd_keys", {}).values():
        assert value not in resp.content.decode().lower()


@pytest.mark.parametrize(
    "drop, fields", [(("isd_keys",), {"isd_keys"}), (("isd_keys", "kvn"), {"isd_keys", "kvn"})]
)
def test_an_se_still_needs_its_isd_key_set(world: Any, drop: tuple, fields: set) -> None:
    row = {k: v for k, v in se_row("SE-NOKEYS").items() if k not in drop}
    resp = post(world, row)
    assert resp.status_code == 400, resp.content
    assert resp.json()["error"]["code"] == "isd_keys_required"
    assert set(resp.json()["error"]["fields"]) == fields
    assert not SecureElement.objects.filter(serial="SE-NOKEYS").exists()


def test_an_se_without_i_param_gets_the_default_and_its_key_set(world: Any) -> None:
    row = {k: v for k, v in se_row("SE-DEF").items() if k != "i_param"}
    resp = post(world, row)
    assert resp.status_code == 201, resp.content
    ks = KeySet.objects.get(security_domain__secure_element__serial="SE-DEF")
    assert (ks.kvn, ks.i_param, ks.status) == (0x30, 0x70, "active")


def test_a_csv_batch_mixes_ses_and_tees(world: Any) -> None:
    keys = isd_keys_hex()
    content = (
        "serial,kind,isd_aid,enc,mac,dek,kvn\n"
        f"SE-B1,se,A000000151000000,{keys['enc']},{keys['mac']},{keys['dek']},48\n"
        "TEE-B1,tee,A000000151000000,,,,\n"
        f"TEE-B2,tee,A000000151000000,{keys['enc']},{keys['mac']},{keys['dek']},48\n"
        "SE-B2,se,A000000151000000,,,,\n"
    ).encode()
    resp = client_for(world.owner_user).post(
        SES + "batch/",
        {"file": SimpleUploadedFile("s.csv", content, content_type="text/csv")},
        format="multipart",
    )
    assert resp.status_code == 200, resp.content
    rows = {r["serial"]: r for r in resp.json()["rows"]}
    assert (rows["SE-B1"]["status"], rows["TEE-B1"]["status"]) == ("created", "created")
    assert rows["TEE-B2"]["status"] == rows["SE-B2"]["status"] == "error"
    assert "isd_keys" in str(rows["TEE-B2"]["error"]) and "isd_keys" in str(rows["SE-B2"]["error"])
    assert KeySet.objects.filter(security_domain__secure_element__serial="SE-B1").count() == 1
    assert not KeySet.objects.filter(security_domain__secure_element__serial="TEE-B1").exists()
    assert not SecureElement.objects.filter(serial__in=["TEE-B2", "SE-B2"]).exists()


def test_an_issuer_registers_a_tee_through_the_form(world: Any) -> None:
    client = Client()
    client.force_login(world.owner_user)
    form = {"serial": "PTEE-1", "kind": "tee", "isd_aid": "A000000151000000", "i_param": 112}  # the pre-fill
    resp = client.post("/o/owner-sei/secure-elements/register/", form)
    assert resp.status_code == 200, resp.content.decode()[:2000]
    assert "no ISD key set" in resp.content.decode()
    assert SecureElement.objects.get(serial="PTEE-1").kind == "tee"
    # keys typed in for a TEE are refused, shown back with 400
    resp = client.post(
        "/o/owner-sei/secure-elements/register/", {**form, "serial": "PTEE-2", **isd_keys_hex()}
    )
    assert resp.status_code == 400
    assert not SecureElement.objects.filter(serial="PTEE-2").exists()


def test_a_supplier_uploads_a_tee_without_wrapped_keys_and_is_refused_keys_for_one(supply: Any) -> None:  # noqa: F811
    pub = _import_public_key(supply)
    card, _ = _soft_card()
    casd = ec.generate_private_key(ec.SECP256R1()).public_key()
    with_keys = batch_record(card, import_public_key=pub, sei="owner-sei", casd_public_key=casd)
    tee = {
        "serial": "TEE-S1",
        "kind": "tee",
        "isd_aid": "A000000151000000",
        "casd_public_key": with_keys["casd_public_key"],
    }
    resp = _upload(
        supply, [tee, {**with_keys, "kind": "tee"}, {"serial": "SE-S0", "isd_aid": "A000000151000000"}]
    )
    assert resp.status_code == 200, resp.content
    rows = resp.json()["rows"]
    assert [r["status"] for r in rows] == ["created", "error", "error"]
    assert "leave out wrapped_isd_keys, kvn" in rows[1]["error"]
    assert "give wrapped_isd_keys and kvn" in rows[2]["error"]
    se = SecureElement.objects.get(serial="TEE-S1")
    assert (se.kind, se.issuer, se.supplier) == ("tee", supply.owner, supply.ses)
    assert not KeySet.objects.filter(security_domain__secure_element=se).exists()
    assert rows[0]["casd"]["state"] in ("certified", "uncertified")
