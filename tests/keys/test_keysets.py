"""Key sets: import, generate, status compare-and-set, visibility; key material never in the DB,
the logs or any answer."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.apps import apps
from django.db import connection

from keys import selectors, services
from keys.errors import KeysError, KeySetConflict, VaultError
from keys.models import KeySet
from portal.errors import NotFoundError
from tenants.access import resolve_actor
from tests.conftest import client_for
from tests.support.enrolment import isd_keys_hex, se_row


def owner_actor(world: Any) -> Any:
    return resolve_actor(world.owner_user, "owner-sei")


def import_isd(world: Any, kvn: int = 0x30) -> tuple[KeySet, dict[str, str]]:
    keys = isd_keys_hex()
    ks = services.keyset_import(
        actor=owner_actor(world),
        security_domain=world.isd,
        kvn=kvn,
        keys=services.static_keys_from_hex(**keys),
        sequence_counter=7,
    )
    return ks, keys


def test_an_imported_key_set_opens_to_the_same_keys_with_matching_kcvs(world: Any) -> None:
    from gp.scp03 import kcv

    ks, keys = import_isd(world)
    opened = services.keyset_static_keys(keyset=KeySet.objects.get(pk=ks.pk))
    assert (opened.enc.hex(), opened.mac.hex(), opened.dek.hex()) == (keys["enc"], keys["mac"], keys["dek"])
    assert ks.kcv_enc == kcv(opened.enc).hex().upper()
    assert (ks.status, ks.owner, ks.sequence_counter, ks.i_param) == ("active", world.owner, 7, 0x70)


def test_a_sealed_key_set_copied_onto_another_key_set_does_not_open(world: Any) -> None:
    one, _ = import_isd(world, 0x30)
    two, _ = import_isd(world, 0x31)
    KeySet.objects.filter(pk=two.pk).update(sealed=bytes(one.sealed))
    with pytest.raises(VaultError):
        services.keyset_static_keys(keyset=KeySet.objects.get(pk=two.pk))


def test_a_generated_key_set_is_random_pending_and_kcv_only(world: Any) -> None:
    ks = services.keyset_generate(
        actor=owner_actor(world), security_domain=world.isd, kvn=0x31, key_length=32
    )
    keys = services.keyset_static_keys(keyset=ks)
    assert ks.status == "pending" and ks.key_length == 32 and len(keys.enc) == 32
    assert len({keys.enc, keys.mac, keys.dek}) == 3


def test_a_kvn_already_live_on_the_sd_is_a_conflict_until_destroyed(world: Any) -> None:
    ks, _ = import_isd(world, 0x30)
    with pytest.raises(KeySetConflict):
        import_isd(world, 0x30)
    actor = owner_actor(world)
    services.keyset_set_status(actor=actor, keyset=ks, from_status="active", to_status="retired")
    services.keyset_set_status(actor=actor, keyset=ks, from_status="retired", to_status="destroyed")
    assert bytes(KeySet.objects.get(pk=ks.pk).sealed) == b""
    again, _ = import_isd(world, 0x30)
    assert again.kvn == 0x30


def test_status_changes_are_compare_and_set(world: Any) -> None:
    ks, _ = import_isd(world)
    actor = owner_actor(world)
    services.keyset_set_status(actor=actor, keyset=ks, from_status="active", to_status="retired")
    with pytest.raises(KeySetConflict):
        services.keyset_set_status(actor=actor, keyset=ks, from_status="active", to_status="retired")
    with pytest.raises(KeysError):
        services.keyset_set_status(actor=actor, keyset=ks, from_status="retired", to_status="pending")


def test_a_destroyed_key_set_never_opens(world: Any) -> None:
    ks, _ = import_isd(world)
    services.keyset_set_status(
        actor=owner_actor(world), keyset=ks, from_status="active", to_status="destroyed"
    )
    with pytest.raises(VaultError):
        services.keyset_static_keys(keyset=KeySet.objects.get(pk=ks.pk))


@pytest.mark.parametrize("kvn", [0, 0x80, -1, True, "1"])
def test_a_kvn_out_of_range_is_refused(world: Any, kvn: Any) -> None:
    with pytest.raises(KeysError):
        import_isd(world, kvn)


def test_only_the_sd_owner_holds_its_key_sets(world: Any) -> None:
    # the issuer may not put keys into the provider's SSD (the provider's keys are the provider's)
    with pytest.raises(NotFoundError):
        services.keyset_generate(actor=owner_actor(world), security_domain=world.ssd, kvn=0x30)
    provider = resolve_actor(world.provider_user, "provider-sp")
    ks = services.keyset_generate(actor=provider, security_domain=world.ssd, kvn=0x30)
    assert ks.owner == world.provider
    # a stranger cannot import into the owner's ISD
    with pytest.raises(NotFoundError):
        services.keyset_generate(
            actor=resolve_actor(world.stranger_user, "stranger-sp"), security_domain=world.isd, kvn=0x31
        )


def test_key_sets_are_visible_to_their_owner_and_to_a_key_mandate_only(world: Any) -> None:
    ks, _ = import_isd(world)
    assert list(selectors.keysets_for_sd(owner_actor(world), world.isd)) == [ks]
    assert list(selectors.keysets_for_sd(resolve_actor(world.provider_user, "provider-sp"), world.isd)) == []
    # the collaborator's mandate (devices.view, audit.view, sd.create) covers no keys
    collab = resolve_actor(world.collaborator_user, "collab-tsm", "owner-sei")
    assert list(selectors.keysets_for_sd(collab, world.isd)) == []
    world.mandate.actions = [*world.mandate.actions, "keys.load"]
    world.mandate.save()
    collab = resolve_actor(world.collaborator_user, "collab-tsm", "owner-sei")
    assert list(selectors.keysets_for_sd(collab, world.isd)) == [ks]


def test_the_active_key_set_is_the_newest_active_one(world: Any) -> None:
    assert selectors.active_keyset(world.isd) is None
    ks, _ = import_isd(world, 0x30)
    pending = services.keyset_generate(actor=owner_actor(world), security_domain=world.isd, kvn=0x31)
    assert selectors.active_keyset(world.isd) == ks
    services.keyset_set_status(
        actor=owner_actor(world), keyset=pending, from_status="pending", to_status="active"
    )
    assert selectors.active_keyset(world.isd) == pending


def test_the_sequence_counter_is_recorded_for_precomputed_scripts(world: Any) -> None:
    ks, _ = import_isd(world)
    services.keyset_set_sequence_counter(keyset=ks, value=42)
    assert KeySet.objects.get(pk=ks.pk).sequence_counter == 42
    with pytest.raises(KeysError):
        services.keyset_set_sequence_counter(keyset=ks, value=0x1000000)


# --- key material never leaves the vault ----------------------------------------------------------


def _all_stored_values() -> list[bytes]:
    """Every text and binary value of every column of every table, as bytes."""
    out: list[bytes] = []
    with connection.cursor() as cur:
        for model in apps.get_models():
            table = model._meta.db_table
            cur.execute(f'SELECT * FROM "{table}"')  # noqa: S608 - table names from the app registry
            for row in cur.fetchall():
                for value in row:
                    if isinstance(value, str):
                        out.append(value.encode())
                    elif isinstance(value, bytes | memoryview):
                        out.append(bytes(value))
    return out


def test_isd_keys_enrolled_through_the_api_are_never_in_the_answer_the_database_or_the_logs(
    world: Any, caplog: Any
) -> None:
    # given an SE issuer enrolling an SE and then a batch, with logging at its most verbose
    caplog.set_level(logging.DEBUG)
    row = se_row("SE-SECRET-1")
    batch_row = se_row("SE-SECRET-2")
    bad_row = se_row("SE-SECRET-3", isd_aid="zz")
    client = client_for(world.owner_user)
    # when
    answers = [
        client.post("/api/v1/orgs/owner-sei/secure-elements/", row, format="json"),
        client.post(
            "/api/v1/orgs/owner-sei/secure-elements/batch/",
            {"secure_elements": [batch_row, bad_row]},
            format="json",
        ),
        client.post(
            "/api/v1/orgs/owner-sei/secure-elements/", {**row, "serial": "SE-SECRET-1"}, format="json"
        ),
        client.get(f"/api/v1/orgs/owner-sei/devices/{world.device.pk}/"),
        client.get("/o/owner-sei/devices/"),
    ]
    assert [a.status_code for a in answers[:3]] == [201, 200, 409]
    # then no answer, no stored value and no log line holds any of the keys, in hex or raw
    secrets = []
    for r in (row, batch_row, bad_row):
        for name in ("enc", "mac", "dek"):
            hex_key = r["isd_keys"][name]
            secrets += [hex_key.lower().encode(), hex_key.upper().encode(), bytes.fromhex(hex_key)]
    stored = _all_stored_values()
    logs = "\n".join(rec.getMessage() + str(rec.args) + str(rec.exc_text) for rec in caplog.records).encode()
    for secret in secrets:
        for answer in answers:
            assert secret not in answer.content
        assert not any(secret in value for value in stored)
        assert secret not in logs
    # and the KCVs are there instead
    assert (
        KeySet.objects.filter(
            security_domain__secure_element__serial__in=["SE-SECRET-1", "SE-SECRET-2"]
        ).count()
        == 2
    )


def test_the_repr_of_opened_keys_shows_kcvs_only(world: Any) -> None:
    ks, keys = import_isd(world)
    text = repr(services.keyset_static_keys(keyset=ks)).lower()
    assert all(v not in text for v in keys.values())
    assert ks.kcv_enc.lower() in text
