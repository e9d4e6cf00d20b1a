"""The SE supplier's manufacturing batch (issue 5 item 6): ISD keys arrive wrapped to the SE
issuer's import key, are opened only in the issuer's vault path, and never sit in clear anywhere."""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.apps import apps
from django.db import connection

from devices.models import SecureElement
from gp.card.manufacture import batch_csv, batch_record, load_import_public_key
from gp.card.softcard import SoftCard
from gp.scp03 import StaticKeys, kcv
from keys import handover
from keys.models import ImportKey, KeySet
from tenants.access import resolve_actor
from tenants.models import MemberRole, OrgRole
from tests import factories as f
from tests.conftest import client_for

ISD_AID = bytes.fromhex("A000000151000000")


@pytest.fixture
def supply(world: Any) -> Any:
    """The world's owner (an SE issuer) with an import key, an SE supplier it named with a
    se.supply mandate, and another supplier it did not name."""
    ses = f.OrganisationFactory(slug="chip-ses", name="Chip SES", roles=[OrgRole.SE_SUPPLIER])
    other = f.OrganisationFactory(slug="other-ses", name="Other SES", roles=[OrgRole.SE_SUPPLIER])
    ses_user = f.MembershipFactory(
        org=ses, user=f.UserFactory(username="ses-user"), role=MemberRole.OWNER
    ).user
    other_user = f.MembershipFactory(
        org=other, user=f.UserFactory(username="other-ses-user"), role=MemberRole.OWNER
    ).user
    mandate = f.MandateFactory(grantor=world.owner, grantee=ses, actions=["se.supply"])
    key = handover.import_key_rotate(actor=resolve_actor(world.owner_user, "owner-sei"))
    world.ses, world.ses_user, world.other_user, world.supply_mandate = ses, ses_user, other_user, mandate
    world.import_key = key
    return world


def _import_public_key(world: Any) -> ec.EllipticCurvePublicKey:
    resp = client_for(world.ses_user).get("/api/v1/import-keys/owner-sei/")
    assert resp.status_code == 200
    body = resp.json()
    assert body["fingerprint"] == world.import_key.fingerprint
    return load_import_public_key(body["public_key"])


def _soft_card(serial: bytes | None = None, length: int = 16) -> tuple[SoftCard, StaticKeys]:
    keys = StaticKeys(os.urandom(length), os.urandom(length), os.urandom(length))
    card = SoftCard.create(None, isd_aid=ISD_AID, keys=keys, key_version=0x30, serial=serial or os.urandom(4))
    return card, keys


def _rows(world: Any, n: int = 2) -> tuple[list[dict[str, Any]], list[StaticKeys]]:
    pub = _import_public_key(world)
    rows, keys = [], []
    for _ in range(n):
        card, k = _soft_card()
        casd = ec.generate_private_key(ec.SECP256R1()).public_key()
        rows.append(batch_record(card, import_public_key=pub, sei="owner-sei", casd_public_key=casd))
        keys.append(k)
    return rows, keys


def _upload(
    world: Any,
    rows: list[dict[str, Any]],
    *,
    user: Any = None,
    org: str = "chip-ses",
    issuer: str = "owner-sei",
) -> Any:
    return client_for(user or world.ses_user).post(
        f"/api/v1/orgs/{org}/supply-batches/", {"issuer": issuer, "secure_elements": rows}, format="json"
    )


def test_a_supplier_uploads_a_batch_and_the_issuer_holds_the_isd_keys_with_their_kcvs(supply: Any) -> None:
    # given two soft SEs whose ISD keys are wrapped to the issuer's import key
    rows, keys = _rows(supply)
    # when the supplier uploads them
    resp = _upload(supply, rows)
    # then both are created, for the issuer, supplied by the supplier
    assert resp.status_code == 200, resp.content
    body = resp.json()
    assert (body["created"], body["failed"], body["issuer"]) == (2, 0, "owner-sei")
    for row, k, entry in zip(rows, keys, body["rows"], strict=True):
        se = SecureElement.objects.get(pk=entry["id"])
        assert (se.issuer, se.supplier, se.serial) == (supply.owner, supply.ses, row["serial"])
        assert entry["casd"]["state"] in ("certified", "uncertified")
        pub = serialization.load_der_public_key(bytes(se.casd_public_key))
        point = pub.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        assert point.hex().upper() == row["casd_public_key"]
        ks = KeySet.objects.get(security_domain__secure_element=se)
        assert (ks.owner, ks.kvn, ks.status, ks.sequence_counter) == (supply.owner, 0x30, "active", 1)
        assert ks.kcvs == {n: kcv(getattr(k, n)).hex().upper() for n in ("enc", "mac", "dek")}
        # the issuer's vault opens them to the card's keys: the enrolment is as with clear keys
        from keys.services import keyset_static_keys

        assert keyset_static_keys(keyset=ks) == k
        # and the issuer sees them, as KCVs, through the API
        isd = se.security_domains.get(is_isd=True)
        detail = client_for(supply.owner_user).get(f"/api/v1/orgs/owner-sei/security-domains/{isd.pk}/")
        assert detail.status_code == 200
        assert detail.json()["key_sets"][0]["kcv"] == ks.kcvs


def test_the_supplier_sees_its_ses_but_never_their_key_sets(supply: Any) -> None:
    rows, _ = _rows(supply, 1)
    se_id = _upload(supply, rows).json()["rows"][0]["id"]
    client = client_for(supply.ses_user)
    assert client.get(f"/api/v1/orgs/chip-ses/secure-elements/{se_id}/").status_code == 200
    ks = KeySet.objects.get(security_domain__secure_element_id=se_id)
    text = json.dumps(
        [client.get(f"/api/v1/orgs/chip-ses/{c}/").json() for c in ("secure-elements", "security-domains")]
    )
    assert ks.kcv_enc not in text and ks.kcv_mac not in text
    from keys.selectors import keysets_by_sd

    actor = resolve_actor(supply.ses_user, "chip-ses")
    assert keysets_by_sd(actor, [ks.security_domain_id]) == {}


def test_a_supplier_the_issuer_did_not_name_and_a_stranger_get_404_and_nothing_is_written(
    supply: Any,
) -> None:
    rows, _ = _rows(supply, 1)
    before = SecureElement.objects.count()
    resp = _upload(supply, rows, user=supply.other_user, org="other-ses")
    assert resp.status_code == 404
    nothing = _upload(supply, rows, user=supply.other_user, org="other-ses", issuer="no-such-sei")
    assert nothing.status_code == 404 and nothing.json() == resp.json()
    assert _upload(supply, rows, user=supply.stranger_user, org="chip-ses").status_code == 404
    assert _upload(supply, rows, user=supply.stranger_user, org="stranger-sp").status_code in (400, 404)
    # a revoked mandate is no mandate
    from django.utils import timezone

    supply.supply_mandate.revoked_at = timezone.now()
    supply.supply_mandate.save()
    assert _upload(supply, rows).status_code == 404
    assert SecureElement.objects.count() == before


def test_bad_rows_are_reported_one_by_one_and_good_rows_kept(supply: Any) -> None:
    rows, _ = _rows(supply, 6)
    rows[1]["wrapped_isd_keys"] = rows[1]["wrapped_isd_keys"][:-2] + (
        "00" if rows[1]["wrapped_isd_keys"][-2:] != "00" else "01"
    )  # tampered
    rows[2]["serial"] = "DEADBEEF"  # wrapped for another serial
    rows[3]["kvn"] = 0x31  # wrapped for another KVN
    rows[4]["casd_public_key"] = "04" + "00" * 64  # not on the curve
    rows[5]["wrapped_isd_keys"] = "not hex or base64!"
    resp = _upload(supply, rows + [{"serial": 12}, "not an object"])
    assert resp.status_code == 200, resp.content
    report = resp.json()["rows"]
    assert [r["status"] for r in report] == ["created"] + ["error"] * 7
    assert "do not open" in report[1]["error"]
    assert "do not open" in report[2]["error"] and "do not open" in report[3]["error"]
    assert "casd_public_key" in report[4]["error"]
    assert "hex or base64" in report[5]["error"]
    assert SecureElement.objects.filter(supplier=supply.ses).count() == 1


def test_a_batch_wrapped_to_another_issuers_key_is_refused(supply: Any) -> None:
    card, _ = _soft_card()
    wrong = ec.generate_private_key(ec.SECP256R1()).public_key()
    row = batch_record(card, import_public_key=wrong, sei="owner-sei")
    resp = _upload(supply, [row])
    assert resp.status_code == 400
    assert "import key" in resp.json()["error"]["fields"]["rows"][0]["error"]


def test_a_row_wrapped_for_another_issuer_does_not_open(supply: Any) -> None:
    card, _ = _soft_card()
    row = batch_record(card, import_public_key=_import_public_key(supply), sei="stranger-sp")
    resp = _upload(supply, [row])
    assert resp.status_code == 400
    assert "do not open" in resp.json()["error"]["fields"]["rows"][0]["error"]


def test_rotation_keeps_batches_in_flight_until_the_old_key_is_retired(supply: Any) -> None:
    # given a batch wrapped to the current key, then a rotation
    rows, _ = _rows(supply, 2)
    owner = client_for(supply.owner_user)
    resp = owner.post("/api/v1/orgs/owner-sei/import-keys/", {}, format="json")
    assert resp.status_code == 201
    new_fp = resp.json()["fingerprint"]
    listing = owner.get("/api/v1/orgs/owner-sei/import-keys/").json()["results"]
    assert [(k["fingerprint"], k["status"]) for k in listing] == [
        (new_fp, "current"),
        (supply.import_key.fingerprint, "retiring"),
    ]
    assert client_for(supply.ses_user).get("/api/v1/import-keys/owner-sei/").json()["fingerprint"] == new_fp
    # then the batch in flight still opens
    assert _upload(supply, rows[:1]).json()["created"] == 1
    # the current key is never retired directly
    resp = owner.post("/api/v1/orgs/owner-sei/import-keys/retire/", {"fingerprint": new_fp}, format="json")
    assert resp.status_code == 409
    # once the old key is retired, its private key is gone and its batches are refused
    resp = owner.post(
        "/api/v1/orgs/owner-sei/import-keys/retire/",
        {"fingerprint": supply.import_key.fingerprint},
        format="json",
    )
    assert resp.status_code == 200 and resp.json()["status"] == "retired"
    assert bytes(ImportKey.objects.get(pk=supply.import_key.pk).sealed_private_key) == b""
    resp = _upload(supply, rows[1:])
    assert resp.status_code == 400
    assert "does not accept" in resp.json()["error"]["fields"]["rows"][0]["error"]


def test_import_keys_are_the_issuers_own_business(supply: Any) -> None:
    assert client_for(supply.ses_user).get("/api/v1/orgs/chip-ses/import-keys/").json()["results"] == []
    assert client_for(supply.stranger_user).get("/api/v1/orgs/owner-sei/import-keys/").status_code == 404
    resp = client_for(supply.ses_user).post("/api/v1/orgs/chip-ses/import-keys/", {}, format="json")
    assert resp.status_code == 400  # not an SE issuer
    # nobody publishes a key for an organisation that is not an SE issuer, or does not exist
    for slug in ("chip-ses", "no-such-org"):
        assert client_for(supply.ses_user).get(f"/api/v1/import-keys/{slug}/").status_code == 404
    assert (
        client_for(supply.ses_user).get("/api/v1/import-keys/chip-ses/").json()
        == client_for(supply.ses_user).get("/api/v1/import-keys/no-such-org/").json()
    )


def test_a_csv_file_from_the_manufacturing_cli_uploads_the_same_way(supply: Any) -> None:
    rows, _ = _rows(supply, 2)
    upload = io.BytesIO(batch_csv(rows).encode())
    upload.name = "batch.csv"
    resp = client_for(supply.ses_user).post(
        "/api/v1/orgs/chip-ses/supply-batches/", {"issuer": "owner-sei", "file": upload}, format="multipart"
    )
    assert resp.status_code == 200, resp.content
    assert resp.json()["created"] == 2


def test_the_manufacturing_cli_prints_a_batch_that_uploads(supply: Any, tmp_path: Any, capsys: Any) -> None:
    from gp.card import manufacture

    pem = tmp_path / "import.pem"
    pem.write_text(client_for(supply.ses_user).get("/api/v1/import-keys/owner-sei/").json()["public_key"])
    assert (
        manufacture.main(
            ["--import-key", str(pem), "--sei", "owner-sei", "--count", "3", "--dir", str(tmp_path / "cards")]
        )
        == 0
    )
    batch = json.loads(capsys.readouterr().out)
    assert len(list((tmp_path / "cards").glob("*.se"))) == 3
    resp = _upload(supply, batch["secure_elements"])
    assert resp.json()["created"] == 3


def _all_stored_bytes() -> bytes:
    """Every text and binary value of every table, raw, as one haystack."""
    chunks: list[bytes] = []
    with connection.cursor() as cur:
        for model in apps.get_models():
            table = model._meta.db_table
            cols = [
                fld.column
                for fld in model._meta.concrete_fields
                if fld.get_internal_type()
                in ("CharField", "TextField", "BinaryField", "JSONField", "SlugField", "EmailField")
            ]
            if not cols:
                continue
            cur.execute(
                f"SELECT {', '.join(connection.ops.quote_name(c) for c in cols)} FROM {connection.ops.quote_name(table)}"
            )  # noqa: S608
            for record in cur.fetchall():
                for value in record:
                    if isinstance(value, memoryview | bytes | bytearray):
                        chunks.append(bytes(value))
                    elif value is not None:
                        chunks.append(str(value).encode())
    return b"\x00".join(chunks)


def test_the_clear_isd_keys_appear_in_no_database_row_and_no_log(supply: Any, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG)
    rows, keys = _rows(supply, 3)
    resp = _upload(supply, rows)
    assert resp.json()["created"] == 3
    haystack = _all_stored_bytes().lower() + resp.content.lower()
    logs = caplog.text.lower().encode()
    assert len(haystack) > 1000  # the search saw the rows
    for k in keys:
        for secret in (k.enc, k.mac, k.dek, k.enc + k.mac + k.dek):
            for needle in (secret, secret.hex().encode(), secret.hex().upper().encode().lower()):
                assert needle.lower() not in haystack
                assert needle.lower() not in logs
    # the sealed import private key is not in clear either
    key = ImportKey.objects.get(pk=supply.import_key.pk)
    assert b"PRIVATE KEY" not in haystack and bytes(key.sealed_private_key)[:1] == b"\x01"


def test_agent_init_with_an_import_key_writes_a_wrapped_record_that_uploads(
    supply: Any, tmp_path: Any, capsys: Any
) -> None:
    from agent.cli import main as agent_main

    pem = tmp_path / "import.pem"
    pem.write_text(client_for(supply.ses_user).get("/api/v1/import-keys/owner-sei/").json()["public_key"])
    argv = ["init", "--config", str(tmp_path / "agent.toml"), "--server", "https://portal.example"]
    argv += ["--serial", "GW-9", "--import-key", str(pem), "--sei", "owner-sei"]
    assert agent_main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    record = out["se"]["handover"]
    assert out["isd_keys_file"].endswith(".handover.json")
    assert json.loads(Path(out["isd_keys_file"]).read_text()) == record
    assert not list(tmp_path.glob("*.isd-keys.json"))  # no clear keys on disk
    assert "enc" not in record and record["serial"] == out["se"]["serial"]
    resp = _upload(supply, [record])
    assert resp.json()["created"] == 1, resp.content
    # --sei alone, or a bad key file, is a usage error
    assert agent_main([*argv[:5], "--serial", "GW-9", "--sei", "x", "--force"]) == 2
    pem.write_text("not a key")
    assert agent_main([*argv, "--force"]) == 2


def test_with_a_certificate_authority_each_casd_key_is_certified_at_upload(supply: Any) -> None:
    from keys.models import Certificate
    from tests.support.ca import make_ca

    # given a deployment with one Controlling Authority
    make_ca()
    rows, _ = _rows(supply, 2)
    rows[1].pop("casd_public_key")
    # when the supplier uploads
    report = _upload(supply, rows).json()["rows"]
    # then the SE with a CASD key is certified for that key, the other says it has none
    assert report[0]["casd"]["state"] == "certified", report[0]
    cert = Certificate.objects.get(pk=report[0]["casd"]["certificate"])
    se = SecureElement.objects.get(pk=report[0]["id"])
    assert cert.secure_element_id == se.pk
    assert report[1]["casd"]["state"] == "none" and report[1]["status"] == "created"


def test_without_a_certificate_authority_the_se_is_kept_uncertified_and_the_row_says_so(supply: Any) -> None:
    rows, _ = _rows(supply, 1)
    entry = _upload(supply, rows).json()["rows"][0]
    assert (entry["status"], entry["casd"]["state"]) == ("created", "uncertified")
    assert "certificate authority" in entry["casd"]["detail"].lower()
