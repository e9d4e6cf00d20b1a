"""Enrolment pages: the forms, the batch report, suspension, and key sets shown as KCVs."""

from __future__ import annotations

from typing import Any

from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from devices.models import Device, SecureElement
from keys.models import KeySet
from tests.support.enrolment import identity_pem, isd_keys_hex


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_devices_page_links_to_the_enrolment_forms_for_a_manufacturer_and_issuer(world: Any) -> None:
    body = logged_in(world.owner_user).get("/o/owner-sei/devices/").content.decode()
    for path in (
        "devices/register/",
        "devices/batch/",
        "secure-elements/register/",
        "secure-elements/batch/",
    ):
        assert f"/o/owner-sei/{path}" in body


def test_a_manufacturer_registers_a_device_through_the_form(world: Any) -> None:
    pem, key_id = identity_pem()
    resp = logged_in(world.owner_user).post(
        "/o/owner-sei/devices/register/", {"serial": "PG-1", "kind": "meter", "identity_public_key": pem}
    )
    device = Device.objects.get(serial="PG-1")
    assert resp.status_code == 302 and resp["Location"] == f"/o/owner-sei/devices/{device.pk}/"
    assert device.identity_key_id == key_id


def test_a_bad_identity_key_in_the_form_is_shown_back_with_400(world: Any) -> None:
    resp = logged_in(world.owner_user).post(
        "/o/owner-sei/devices/register/", {"serial": "PG-2", "kind": "meter", "identity_public_key": "nope"}
    )
    assert resp.status_code == 400
    assert "P-256" in resp.content.decode()
    assert not Device.objects.filter(serial="PG-2").exists()


def test_an_issuer_registers_an_se_through_the_form_and_sees_only_kcvs(world: Any) -> None:
    keys = isd_keys_hex()
    resp = logged_in(world.owner_user).post(
        "/o/owner-sei/secure-elements/register/",
        {
            "serial": "PSE-1",
            "kind": "se",
            "isd_aid": "A000000151000000",
            "kvn": 48,
            "i_param": 112,
            **keys,
        },
    )
    assert resp.status_code == 200, resp.content.decode()[:2000]
    body = resp.content.decode()
    keyset = KeySet.objects.get(security_domain__secure_element__serial="PSE-1")
    assert keyset.kcv_enc in body
    assert all(v not in body.lower() for v in keys.values())


def test_the_batch_page_shows_the_per_row_report(world: Any) -> None:
    pem, _ = identity_pem()
    content = ('serial,kind,identity_public_key\nPB-1,meter,"' + pem + '"\nPB-2,toaster,x\n').encode()
    resp = logged_in(world.owner_user).post(
        "/o/owner-sei/devices/batch/", {"file": SimpleUploadedFile("d.csv", content, content_type="text/csv")}
    )
    assert resp.status_code == 200
    body = resp.content.decode()
    assert "1 created, 1 refused" in body
    assert "PB-2" in body
    assert Device.objects.filter(serial="PB-1").exists()


def test_an_oversized_upload_page_answers_413(world: Any) -> None:
    content = b"serial,kind,identity_public_key\n" + b"x" * (2 * 1024 * 1024 + 10)
    resp = logged_in(world.owner_user).post(
        "/o/owner-sei/secure-elements/batch/", {"file": SimpleUploadedFile("s.csv", content)}
    )
    assert resp.status_code == 413
    assert SecureElement.objects.count() == 1


def test_the_manufacturer_suspends_a_device_from_its_page(world: Any) -> None:
    client = logged_in(world.owner_user)
    assert "Suspend" in client.get(f"/o/owner-sei/devices/{world.device.pk}/").content.decode()
    resp = client.post(f"/o/owner-sei/devices/{world.device.pk}/suspend/")
    assert resp.status_code == 302
    world.device.refresh_from_db()
    assert world.device.status == "suspended"
    assert "Reactivate" in client.get(f"/o/owner-sei/devices/{world.device.pk}/").content.decode()


def test_the_collaborator_on_behalf_sees_no_enrolment_form_and_cannot_post(world: Any) -> None:
    client = logged_in(world.collaborator_user)
    resp = client.get("/o/collab-tsm/devices/register/?on_behalf_of=owner-sei")
    assert resp.status_code == 200
    assert "identity_public_key" not in resp.content.decode()
    pem, _ = identity_pem()
    resp = client.post(
        "/o/collab-tsm/devices/register/?on_behalf_of=owner-sei",
        {"serial": "CB-1", "kind": "meter", "identity_public_key": pem},
    )
    assert resp.status_code == 404
    assert not Device.objects.filter(serial="CB-1").exists()


def test_the_device_page_shows_key_sets_to_their_owner_only(world: Any) -> None:
    from keys.services import keyset_import, static_keys_from_hex
    from tenants.access import resolve_actor

    ks = keyset_import(
        actor=resolve_actor(world.owner_user, "owner-sei"),
        security_domain=world.isd,
        kvn=0x30,
        keys=static_keys_from_hex(**isd_keys_hex()),
    )
    assert (
        ks.kcv_mac
        in logged_in(world.owner_user).get(f"/o/owner-sei/devices/{world.device.pk}/").content.decode()
    )
    provider_page = (
        logged_in(world.provider_user).get(f"/o/provider-sp/devices/{world.device.pk}/").content.decode()
    )
    assert world.isd.aid in provider_page
    assert ks.kcv_mac not in provider_page
