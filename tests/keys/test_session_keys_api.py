"""Service master keys and session keys through the API (keys/api_sessionkeys.py): only the master
key's owner derives, the same key the SE derives; the key is never stored, logged or audited."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from agent.backends.soft import SoftBackend
from agent.config import LocalApiApp, LocalApiSettings
from agent.demo_meter import Reading, ReadingRejected, local_session_key, sign_reading, verify_reading
from agent.localapi import CardAccess, LocalApiServer
from audit.models import AuditEvent, AuditTag
from gp.card import SoftCard
from gp.commands import (
    AID,
    ClearKey,
    InstallForInstall,
    InstallForPersonalization,
    InstallParameters,
    KeyType,
    Privileges,
    PutKey,
)
from gp.commands.get_data import CPLC
from gp.scp03 import kcv
from gp.sessionkeys import MASTER_KEY_KVN, derive_session_key
from keys.models import KeyCustody, MasterKeyStatus, ServiceMasterKey
from tests.conftest import client_for
from tests.gp.cardkit import ISD_KEYS, SSD_KEYS, Terminal, new_card

MASTER = bytes.fromhex("00112233445566778899AABBCCDDEEFF")


def _urls(world: Any, org: str = "provider-sp") -> tuple[str, str]:
    base = f"/api/v1/orgs/{org}/security-domains/{world.ssd.pk}/"
    return base + "master-key/", base + "session-keys/"


def _deposit(world: Any, key: bytes = MASTER) -> Any:
    return client_for(world.provider_user).post(_urls(world)[0], {"key": key.hex()}, format="json")


def _derive(user: Any, url: str, service: str = "meter.reading", epoch: int = 20419) -> Any:
    return client_for(user).post(url, {"service": service, "epoch": epoch}, format="json")


def test_the_owner_deposits_a_master_key_and_sees_its_kcv_only(world):
    resp = _deposit(world)
    assert resp.status_code == 201, resp.content
    body = resp.json()
    assert body["kcv"] == kcv(MASTER).hex().upper() and body["custody"] == "portal" and body["kvn"] == 0x72
    assert MASTER.hex() not in resp.content.decode().lower()
    mk = ServiceMasterKey.objects.get()
    assert MASTER not in bytes(mk.sealed)
    event = AuditEvent.objects.filter(tag=AuditTag.MASTERKEY_REGISTER).get()
    assert event.details["kcv"] == body["kcv"] and MASTER.hex() not in str(event.details).lower()


def test_the_owner_derives_the_key_the_se_derives_and_the_audit_holds_no_key(world, caplog):
    caplog.set_level(logging.DEBUG)
    _deposit(world)
    resp = _derive(world.provider_user, _urls(world)[1])
    assert resp.status_code == 200, resp.content
    expected = derive_session_key(
        MASTER, service="meter.reading", epoch=20419, se_id=bytes.fromhex(world.se.serial)
    )
    body = resp.json()
    assert body["key"] == expected.hex().upper()
    assert body["master_key_kcv"] == kcv(MASTER).hex().upper()
    assert resp["Cache-Control"] == "no-store"
    event = AuditEvent.objects.filter(tag=AuditTag.SESSIONKEY_DERIVE).get()
    assert event.details == {
        "service": "meter.reading",
        "epoch": 20419,
        "master_key_kcv": body["master_key_kcv"],
    }
    everything = " ".join(str(e.details) for e in AuditEvent.objects.all()) + caplog.text
    assert expected.hex().upper() not in everything.upper() and MASTER.hex().upper() not in everything.upper()


@pytest.mark.parametrize("who", ["owner_user", "stranger_user", "owner_auditor"])
def test_nobody_but_the_master_keys_owner_derives(world, who):
    _deposit(world)
    user = getattr(world, who)
    user = getattr(user, "user", user)
    org = {"owner_user": "owner-sei", "stranger_user": "stranger-sp", "owner_auditor": "owner-sei"}[who]
    resp = _derive(user, _urls(world, org)[1])
    assert resp.status_code in (403, 404), resp.content
    assert "key" not in resp.json()
    assert not AuditEvent.objects.filter(tag=AuditTag.SESSIONKEY_DERIVE).exists()


def test_the_se_issuer_who_sees_the_sd_gets_404_as_if_there_were_no_master_key(world):
    _deposit(world)
    resp = _derive(world.owner_user, _urls(world, "owner-sei")[1])
    assert (resp.status_code, resp.json()["error"]["code"]) == (404, "no_master_key")


def test_the_collaborator_on_the_issuers_behalf_gets_404(world):
    _deposit(world)
    url = _urls(world, "collab-tsm")[1] + "?on_behalf_of=owner-sei"
    assert _derive(world.collaborator_user, url).status_code == 404


def test_without_a_master_key_the_owner_gets_404(world):
    resp = _derive(world.provider_user, _urls(world)[1])
    assert (resp.status_code, resp.json()["error"]["code"]) == (404, "no_master_key")


def test_a_provider_held_master_key_answers_409_and_the_sdk_derives_it(world):
    resp = client_for(world.provider_user).post(
        _urls(world)[0], {"kcv": kcv(MASTER).hex(), "key_length": 16}, format="json"
    )
    assert resp.status_code == 201 and resp.json()["custody"] == KeyCustody.PROVIDER
    assert bytes(ServiceMasterKey.objects.get().sealed) == b""
    resp = _derive(world.provider_user, _urls(world)[1])
    assert (resp.status_code, resp.json()["error"]["code"]) == (409, "master_key_provider_held")
    assert "tessera-provider session-key" in resp.json()["error"]["message"]


def test_a_new_master_key_retires_and_wipes_the_old_one(world):
    _deposit(world)
    _deposit(world, bytes(range(16)))
    old, new = ServiceMasterKey.objects.order_by("created_at")
    assert old.status == MasterKeyStatus.RETIRED and bytes(old.sealed) == b"" and old.retired_at
    assert new.status == MasterKeyStatus.ACTIVE
    body = _derive(world.provider_user, _urls(world)[1]).json()
    assert body["master_key_kcv"] == kcv(bytes(range(16))).hex().upper()


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"service": "Meter Reading", "epoch": 1}, "invalid_service"),
        ({"service": "meter", "epoch": -1}, "invalid"),
        ({"service": "meter", "epoch": 2**32}, "invalid"),
    ],
)
def test_bad_service_or_epoch_is_400(world, payload, code):
    _deposit(world)
    resp = client_for(world.provider_user).post(_urls(world)[1], payload, format="json")
    assert resp.status_code == 400 and resp.json()["error"]["code"] == code


@pytest.mark.parametrize(
    "body", [{"key": "00" * 15}, {"key": "zz"}, {"kcv": "0011"}, {}, {"key": "00" * 16, "kcv": "000000"}]
)
def test_a_bad_master_key_deposit_is_400(world, body):
    resp = client_for(world.provider_user).post(_urls(world)[0], body, format="json")
    assert resp.status_code == 400, resp.content
    assert not ServiceMasterKey.objects.exists()


def test_end_to_end_the_meter_through_the_agents_local_api_and_the_provider_through_the_portal_agree(
    world, tmp_path
):
    # given a persisted soft card whose SSD holds the provider's master key, put there in the
    # provider's own SCP03 session, and the same master key deposited in the provider's vault
    card_path = str(tmp_path / "se.card")
    card: SoftCard = new_card(card_path)
    ssd = AID(world.ssd.aid)
    isd = Terminal(card).open()
    isd.ok(
        InstallForInstall(
            AID("A0000001515350"),
            AID("A000000151535041"),
            ssd,
            Privileges.SECURITY_DOMAIN,
            InstallParameters(bytes.fromhex("81020370")),
        ).to_apdu()
    )
    isd.ok(InstallForPersonalization(ssd).to_apdu())
    scp03 = tuple(ClearKey(KeyType.AES, k) for k in (SSD_KEYS.enc, SSD_KEYS.mac, SSD_KEYS.dek))
    isd.ok(PutKey(0x30, scp03).to_apdu(dek=ISD_KEYS.dek))
    Terminal(card).open(SSD_KEYS, aid=ssd).ok(
        PutKey(MASTER_KEY_KVN, (ClearKey(KeyType.AES, MASTER),)).to_apdu(dek=SSD_KEYS.dek)
    )
    world.se.serial = CPLC.parse(card._state.cplc).ic_serial_number.hex().upper()
    world.se.save(update_fields=["serial"])
    card.close()
    _deposit(world)
    # and the gateway's agent serving its local API to the meter application (this uid)
    sock_dir = Path(tempfile.mkdtemp(prefix="tsk", dir="/tmp"))
    app = LocalApiApp("meter", os.getuid(), world.ssd.aid.upper(), frozenset({"meter.reading"}))
    access = CardAccess(SoftBackend(card_path))
    try:
        with LocalApiServer(LocalApiSettings(sock_dir / "agent.sock", None, (app,)), access) as server:
            # when the meter signs a reading with the key its SE derives
            key = local_session_key(str(server.path), sd=world.ssd.aid, service="meter.reading", epoch=20419)
            signed = sign_reading(key, Reading("meter-1", 1, 20419, 4321))
    finally:
        access.close()
        shutil.rmtree(sock_dir, ignore_errors=True)
    # then the provider's back end, with the key from the portal's API, accepts it and refuses a forgery
    body = _derive(world.provider_user, _urls(world)[1]).json()
    api_key = bytes.fromhex(body["key"])
    assert verify_reading(api_key, signed) == Reading("meter-1", 1, 20419, 4321)
    signed["reading"]["wh"] = 1
    with pytest.raises(ReadingRejected):
        verify_reading(api_key, signed)
