"""The key policy where people see it: the key-set API (assessment on every key set, the
organisation-wide ``key-sets/?flag=…`` list), the device's end of service (registration, batch,
PATCH by the manufacturer or SE issuer only), the device page and the dashboard count. KCVs only."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.test import Client

from audit.models import AuditEvent
from devices.models import Device
from keys import services
from keys.models import KeySet
from tenants.access import resolve_actor
from tests.conftest import client_for
from tests.support.enrolment import device_row, isd_keys_hex

API = "/api/v1/orgs"


def _owner(world: Any) -> Any:
    return resolve_actor(world.owner_user, "owner-sei")


def _isd_key_set(world: Any, *, key_length: int = 16, age_days: int = 0, kvn: int = 0x30) -> KeySet:
    keys = isd_keys_hex(key_length)
    ks = services.keyset_import(
        actor=_owner(world), security_domain=world.isd, kvn=kvn, keys=services.static_keys_from_hex(**keys)
    )
    if age_days:
        created = ks.created_at - dt.timedelta(days=age_days)
        KeySet.objects.filter(pk=ks.pk).update(
            created_at=created, crypto_period_end=created.date() + dt.timedelta(days=730)
        )
        ks.refresh_from_db()
    return ks


def _set_eos(world: Any, value: dt.date | None) -> None:
    Device.objects.filter(pk=world.device.pk).update(end_of_service=value)


def test_a_new_key_set_records_its_crypto_period_from_the_default_policy(world, settings):
    settings.TESSERA_KEY_CRYPTO_PERIOD_DAYS = 365
    ks = _isd_key_set(world)
    assert ks.crypto_period_end == ks.created_at.date() + dt.timedelta(days=365)
    event = AuditEvent.objects.filter(tag="keyset:import").latest("seq")
    assert event.details["crypto_period_end"] == ks.crypto_period_end.isoformat()


def test_device_detail_shows_each_key_sets_assessment_against_the_end_of_service(world):
    ks = _isd_key_set(world)
    _set_eos(world, dt.date.today() + dt.timedelta(days=15 * 365))
    body = client_for(world.owner_user).get(f"{API}/owner-sei/devices/{world.device.pk}/").json()
    assert body["end_of_service"] == (dt.date.today() + dt.timedelta(days=15 * 365)).isoformat()
    sets = body["secure_elements"][0]["security_domains"][0]["key_sets"]
    (out,) = [s for s in sets if s["id"] == str(ks.pk)]
    assert out["algorithm"] == "AES" and out["key_length"] == 16
    assert out["crypto_period_end"] == ks.crypto_period_end.isoformat()
    a = out["assessment"]
    assert a["status"] == "crypto_period_ends_first" and a["algorithm"] == "AES-128"
    assert a["rotate_by"] == ks.crypto_period_end.isoformat()
    assert ks.crypto_period_end.isoformat() in a["message"]
    # KCVs, never key bytes
    assert set(out["kcv"]) == {"enc", "mac", "dek"} and "sealed" not in out


def test_the_key_set_list_filters_by_flag_and_shows_only_what_the_actor_may_see(world):
    fresh = _isd_key_set(world, kvn=0x30)
    old = _isd_key_set(world, kvn=0x31, age_days=800)  # crypto-period over
    _set_eos(world, dt.date.today() + dt.timedelta(days=3650))
    client = client_for(world.owner_user)
    everything = client.get(f"{API}/owner-sei/key-sets/").json()
    assert {r["id"] for r in everything["results"]} == {str(fresh.pk), str(old.pk)}
    row = next(r for r in everything["results"] if r["id"] == str(old.pk))
    assert row["security_domain"] == world.isd.aid
    assert row["device"] == {"id": str(world.device.pk), "serial": world.device.serial}
    expired = client.get(f"{API}/owner-sei/key-sets/?flag=expired").json()
    assert [r["id"] for r in expired["results"]] == [str(old.pk)]
    assert expired["results"][0]["assessment"]["status"] == "expired"
    to_rotate = client.get(f"{API}/owner-sei/key-sets/?flag=to_rotate").json()
    assert [r["id"] for r in to_rotate["results"]] == [str(old.pk)]
    ok_first = client.get(f"{API}/owner-sei/key-sets/?flag=crypto_period_ends_first").json()
    assert [r["id"] for r in ok_first["results"]] == [str(fresh.pk)]
    # a bad flag is a 400 with a stable code; the stranger and the provider see none of these
    bad = client.get(f"{API}/owner-sei/key-sets/?flag=soon")
    assert bad.status_code == 400 and bad.json()["error"]["fields"] == {"flag": ["Unknown."]}
    assert client_for(world.stranger_user).get(f"{API}/stranger-sp/key-sets/").json()["results"] == []
    assert client_for(world.provider_user).get(f"{API}/provider-sp/key-sets/").json()["results"] == []
    assert client_for(world.stranger_user).get(f"{API}/owner-sei/key-sets/").status_code == 404


def test_an_aes_128_key_set_is_flagged_too_weak_under_a_stricter_operator_policy(world, settings):
    settings.TESSERA_KEY_POLICY = "aes256-only"
    settings.TESSERA_KEY_CRYPTO_PERIOD_DAYS = 365 * 40
    ks = _isd_key_set(world)
    _set_eos(world, dt.date(2045, 1, 1))
    rows = client_for(world.owner_user).get(f"{API}/owner-sei/key-sets/?flag=strength_expires_before_device")
    (row,) = rows.json()["results"]
    assert row["id"] == str(ks.pk)
    assert row["assessment"]["target"] == "AES-256" and row["assessment"]["target_key_length"] == 32


def test_the_manufacturer_sets_and_clears_the_end_of_service(world):
    url = f"{API}/owner-sei/devices/{world.device.pk}/"
    client = client_for(world.owner_user)
    resp = client.patch(url, {"end_of_service": "2041-06-30"}, format="json")
    assert resp.status_code == 200, resp.content
    assert resp.json()["end_of_service"] == "2041-06-30"
    world.device.refresh_from_db()
    assert world.device.end_of_service == dt.date(2041, 6, 30)
    event = AuditEvent.objects.filter(tag="device:update").latest("seq")
    assert event.details == {"end_of_service": {"from": None, "to": "2041-06-30"}}
    assert client.patch(url, {"end_of_service": None}, format="json").json()["end_of_service"] is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"end_of_service": "next year"}, "end_of_service"),
        ({"end_of_service": "1999-12-31"}, "end_of_service"),
        ({}, "end_of_service"),
        ({"end_of_service": "2040-01-01", "status": "retired"}, "status"),
    ],
)
def test_a_bad_end_of_service_is_a_400_naming_the_field(world, body, field):
    resp = client_for(world.owner_user).patch(
        f"{API}/owner-sei/devices/{world.device.pk}/", body, format="json"
    )
    assert resp.status_code == 400, resp.content
    assert field in resp.json()["error"]["fields"]
    world.device.refresh_from_db()
    assert world.device.end_of_service is None


def test_only_the_manufacturer_or_se_issuer_may_set_it_others_get_403_or_404(world):
    body = {"end_of_service": "2040-01-01"}
    # the mandated TSM sees the device but does not plan its life
    resp = client_for(world.collaborator_user).patch(
        f"{API}/collab-tsm/devices/{world.device.pk}/?on_behalf_of=owner-sei", body, format="json"
    )
    assert resp.status_code in (403, 404)
    # a stranger does not see it at all
    resp = client_for(world.stranger_user).patch(
        f"{API}/stranger-sp/devices/{world.device.pk}/", body, format="json"
    )
    assert resp.status_code == 404
    world.device.refresh_from_db()
    assert world.device.end_of_service is None


def test_the_se_issuer_of_another_manufacturers_device_may_set_it(world):
    from tests import factories as f

    world.device.manufacturer = world.stranger
    world.device.save(update_fields=["manufacturer"])
    # the owner is still the issuer of the SE in the device
    resp = client_for(world.owner_user).patch(
        f"{API}/owner-sei/devices/{world.device.pk}/", {"end_of_service": "2039-01-01"}, format="json"
    )
    assert resp.status_code == 200, resp.content
    # the manufacturer too; a device of a manufacturer with no SE of ours: 404 (not visible)
    other = f.DeviceFactory(serial="STR-0002", manufacturer=world.stranger)
    resp = client_for(world.owner_user).patch(
        f"{API}/owner-sei/devices/{other.pk}/", {"end_of_service": "2039-01-01"}, format="json"
    )
    assert resp.status_code == 404


def test_registration_and_batch_upload_take_an_end_of_service(world):
    client = client_for(world.owner_user)
    resp = client.post(
        f"{API}/owner-sei/devices/", device_row("MTR-0100", end_of_service="2044-01-01"), format="json"
    )
    assert resp.status_code == 201, resp.content
    assert Device.objects.get(serial="MTR-0100").end_of_service == dt.date(2044, 1, 1)
    rows = [
        device_row("MTR-0101", end_of_service="2043-01-01"),
        device_row("MTR-0102", end_of_service="soon"),
    ]
    resp = client.post(f"{API}/owner-sei/devices/batch/", {"devices": rows}, format="json")
    assert resp.status_code == 200, resp.content
    assert resp.json()["created"] == 1
    assert Device.objects.get(serial="MTR-0101").end_of_service == dt.date(2043, 1, 1)
    assert not Device.objects.filter(serial="MTR-0102").exists()


def _page(user: Any, path: str) -> str:
    client = Client()
    client.force_login(user)
    resp = client.get(path)
    assert resp.status_code == 200, path
    return resp.content.decode()


def test_the_device_page_and_dashboard_flag_key_sets_to_rotate(world):
    old = _isd_key_set(world, age_days=800)
    _set_eos(world, dt.date(2045, 1, 1))
    page = _page(world.owner_user, f"/o/owner-sei/devices/{world.device.pk}/")
    assert "1 Jan 2045" in page
    assert "AES-128" in page and "Expired" in page and "policy-expired" in page
    assert old.kcv_enc in page
    keys = services.keyset_static_keys(keyset=old)
    assert keys.enc.hex() not in page.lower() and keys.enc.hex().upper() not in page
    dashboard = _page(world.owner_user, "/o/owner-sei/")
    assert "Key sets to rotate" in dashboard
    # the stranger's dashboard counts none of the owner's
    stranger = _page(world.stranger_user, "/o/stranger-sp/")
    assert "Key sets to rotate" in stranger
