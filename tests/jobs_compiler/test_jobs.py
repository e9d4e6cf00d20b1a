"""Every job kind, compiled in both modes, run on a real SoftCard, unwrapped and checked twice:
through the card's own GET STATUS (read_status + parse_inventory) and through card.registry."""

from __future__ import annotations

import os

import pytest

from gp.card import SD_LOAD_FILE_AID, SoftCard
from gp.commands import (
    AID,
    DGI,
    KeyType,
    LifeCycle,
    Privileges,
    PutKeyResponse,
    parse_dgis,
)
from gp.scp03 import kcv
from gp.tlv import TLV
from jobs.compiler import CardAuthError, app_state, parse_inventory, sd_present
from jobs.compiler import payloads as P
from jobs.compiler.demo_app import (
    DEMO_INSTANCE_AID,
    DEMO_LOAD_FILE_AID,
    DEMO_MODULE_AID,
    demo_load_file,
    demo_personalization,
)
from tests.jobs_compiler.kit import ISD, ISD_KEYS, ISD_KVN, Engine, new_card, random_keys

MODES = ["precomputed", "interactive"]
SSD = AID("A000000559001001")
SSD_PRIVS = Privileges.SECURITY_DOMAIN | Privileges.AUTHORIZED_MANAGEMENT


@pytest.fixture(params=MODES)
def mode(request) -> str:
    return request.param


@pytest.fixture
def engine() -> Engine:
    return Engine.for_new_card(new_card())


def inventory(engine: Engine, mode: str, **kw):
    outcome = engine.run(P.read_status(), mode=mode, **kw)
    assert outcome.completed, (outcome.failed_label, outcome.failed_sw)
    inv = parse_inventory(outcome)
    assert inv.complete
    return inv


def registry_matches(inv, card: SoftCard) -> None:
    """The ISD's view (it sees everything) equals the card's registry."""
    reg = card.registry
    isd_aid = AID(card.state_dict()["isd"])
    want_apps = {e.aid: e for e in reg.applications if e.aid != isd_aid}
    got = {e.aid: e for e in [*inv.security_domains, *inv.applications]}
    assert set(got) == set(want_apps)
    for aid, e in got.items():
        w = want_apps[aid]
        assert e.life_cycle == w.life_cycle
        assert e.privileges == w.privileges
        assert e.associated_sd_aid == w.associated_sd_aid
        assert e.load_file_aid == w.load_file_aid
    assert {e.aid: e.modules for e in inv.load_files} == {e.aid: tuple(e.modules) for e in reg.load_files}
    assert {e.aid: e.associated_sd_aid for e in inv.load_files} == {
        e.aid: e.associated_sd_aid for e in reg.load_files
    }
    assert inv.isd is not None and inv.isd.aid == isd_aid
    assert int(inv.isd.life_cycle) == int(reg.card_life_cycle)


def create_ssd(engine: Engine, mode: str, keys=None, kvn: int = 0x20, aid: bytes = SSD):
    keys = keys or random_keys()
    payload = P.create_security_domain(
        isd_keys=ISD_KEYS, ssd_aid=aid, privileges=SSD_PRIVS, new_keys=keys, new_kvn=kvn
    )
    outcome = engine.run(payload, mode=mode)
    assert outcome.completed, (outcome.failed_label, outcome.failed_sw)
    engine.add_keys(aid, kvn, keys)
    return keys, outcome


def test_create_security_domain_then_open_a_session_with_the_new_keys(engine, mode):
    keys, outcome = create_ssd(engine, mode)
    assert outcome.ran == 4 and outcome.setup_sw[-1] == 0x9000
    put = PutKeyResponse.parse(outcome.results[2].response.data)
    assert put.key_version == 0x20 and put.kcvs == (kcv(keys.enc), kcv(keys.mac), kcv(keys.dek))
    presence = parse_inventory(outcome)
    assert sd_present(presence, SSD) and app_state(presence, SSD) == LifeCycle(0x07)

    # the engine's second step: a session of the new SD with the new keys
    verified = engine.run(P.verify_keys(kvn=0x20), mode=mode, sd=SSD, kvn=0x20)
    assert verified.completed
    info = parse_inventory(verified)
    assert info.key_versions() == {0x20}
    assert [(k.kid, k.components[0]) for k in info.keys] == [(i, (KeyType.AES, 16)) for i in (1, 2, 3)]

    inv = inventory(engine, mode)
    assert sd_present(inv, SSD) and sd_present(inv, ISD)
    [ssd] = inv.security_domains
    assert ssd.associated_sd_aid == ISD and ssd.privileges == SSD_PRIVS
    assert ssd.load_file_aid == SD_LOAD_FILE_AID
    registry_matches(inv, engine.card)
    assert engine.card.registry.key_versions[SSD] == (0x20,)
    # the engine's counter bookkeeping agrees with the card
    assert engine.counters[(ISD, ISD_KVN)] == engine.card.sequence_counter(ISD, ISD_KVN)
    assert engine.counters[(SSD, 0x20)] == engine.card.sequence_counter(SSD, 0x20)


@pytest.mark.parametrize("replace", [False, True])
def test_rotate_keys(engine, mode, replace):
    old = create_ssd(engine, mode)[0]
    new = random_keys()
    outcome = engine.run(
        P.rotate_keys(sd_keys=old, new_keys=new, new_kvn=0x21, replace=replace, current_kvn=0x20),
        mode=mode,
        sd=SSD,
        kvn=0x20,
    )
    assert outcome.completed
    engine.add_keys(SSD, 0x21, new)
    assert parse_inventory(outcome).key_versions() == ({0x21} if replace else {0x20, 0x21})
    # the new set opens a session
    assert engine.run(P.verify_keys(kvn=0x21), mode=mode, sd=SSD, kvn=0x21).completed
    if not replace:
        # make-before-break: the old set still works until deleted with the new one
        assert engine.run(P.verify_keys(), mode=mode, sd=SSD, kvn=0x20).completed
        gone = engine.run(P.delete_key_version(kvn=0x20), mode=mode, sd=SSD, kvn=0x21)
        assert gone.completed and parse_inventory(gone).key_versions() == {0x21}
    assert engine.card.registry.key_versions[SSD] == (0x21,)
    # the old key version is gone: INITIALIZE UPDATE for it answers 6A88 and the script stops there
    refused = engine.run(P.verify_keys(), mode="precomputed", sd=SSD, kvn=0x20, keys=old, counter=1)
    assert not refused.completed and refused.failed_label == "INITIALIZE UPDATE"
    assert refused.failed_sw == 0x6A88 and refused.ran == 0
    # and the old keys cannot authenticate against the new key set
    with pytest.raises(CardAuthError):
        engine.run(P.verify_keys(), mode="interactive", sd=SSD, kvn=0x21, keys=old)


def test_rotate_the_issuer_keys(engine, mode):
    new = random_keys()
    outcome = engine.run(
        P.rotate_keys(sd_keys=ISD_KEYS, new_keys=new, new_kvn=0x31, replace=True, current_kvn=ISD_KVN),
        mode=mode,
    )
    assert outcome.completed
    engine.forget(ISD, ISD_KVN)
    engine.add_keys(ISD, 0x31, new)
    registry_matches(inventory(engine, mode, kvn=0x31), engine.card)
    assert engine.card.registry.key_versions[ISD] == (0x31,)


def test_load_install_personalize_lock_unlock_delete_an_application(engine, mode):
    lfdb = demo_load_file(filler=700)
    loaded = engine.run(
        P.load_file(load_file_aid=DEMO_LOAD_FILE_AID, sd_aid=ISD, data=lfdb, block_size=200), mode=mode
    )
    assert loaded.completed and loaded.ran >= 6
    [elf] = parse_inventory(loaded).load_files
    assert elf.aid == DEMO_LOAD_FILE_AID and elf.modules == (DEMO_MODULE_AID,)

    installed = engine.run(
        P.install_application(
            load_file_aid=DEMO_LOAD_FILE_AID,
            module_aid=DEMO_MODULE_AID,
            instance_aid=DEMO_INSTANCE_AID,
            params=b"\x01",
        ),
        mode=mode,
    )
    assert installed.completed
    assert app_state(parse_inventory(installed), DEMO_INSTANCE_AID) == LifeCycle(0x07)

    records = [*demo_personalization(), DGI(0x0201, os.urandom(150)), DGI(0x0202, os.urandom(120))]
    perso = engine.run(
        P.personalize_application(instance_aid=DEMO_INSTANCE_AID, dgis_or_tlvs=records), mode=mode
    )
    assert perso.completed and perso.ran == 1 + 2  # INSTALL [for perso] + two STORE DATA blocks
    stored = engine.card.registry.personalization[DEMO_INSTANCE_AID]
    assert [r for _, d in stored for r in parse_dgis(d)] == records

    locked = engine.run(P.set_status(aid=DEMO_INSTANCE_AID, lock=True), mode=mode)
    assert locked.completed
    assert app_state(parse_inventory(locked), DEMO_INSTANCE_AID) == LifeCycle(0x07, locked=True)
    inv = inventory(engine, mode)
    assert app_state(inv, DEMO_INSTANCE_AID).locked
    registry_matches(inv, engine.card)

    unlocked = engine.run(P.set_status(aid=DEMO_INSTANCE_AID, lock=False), mode=mode)
    assert app_state(parse_inventory(unlocked), DEMO_INSTANCE_AID) == LifeCycle(0x07)

    deleted = engine.run(P.delete_application(aid=DEMO_INSTANCE_AID), mode=mode)
    assert deleted.completed and deleted.results[-1].sw == 0x6A88
    assert app_state(parse_inventory(deleted), DEMO_INSTANCE_AID) is None
    engine.run(P.delete_application(aid=DEMO_LOAD_FILE_AID), mode=mode)
    inv = inventory(engine, mode)
    assert inv.applications == [] and [e.aid for e in inv.load_files] == [SD_LOAD_FILE_AID]
    registry_matches(inv, engine.card)


def test_encrypted_and_tlv_personalization(engine, mode):
    engine.run(P.load_file(load_file_aid=DEMO_LOAD_FILE_AID, sd_aid=None, data=demo_load_file()), mode=mode)
    engine.run(
        P.install_application(
            load_file_aid=DEMO_LOAD_FILE_AID, module_aid=DEMO_MODULE_AID, instance_aid=DEMO_INSTANCE_AID
        ),
        mode=mode,
    )
    records = [DGI(0x8001, os.urandom(16)), DGI(0x0101, b"meter")]
    out = engine.run(
        P.personalize_application(
            instance_aid=DEMO_INSTANCE_AID, dgis_or_tlvs=records, encrypt_with=ISD_KEYS
        ),
        mode=mode,
    )
    assert out.completed
    [(_, data)] = engine.card.registry.personalization[DEMO_INSTANCE_AID]
    assert len(data) % 16 == 0
    assert [r for r in parse_dgis(data) if r.tag != P.FILLER_DGI] == records
    tlvs = [TLV.build(0x5F20, b"TESSERA"), TLV.build(0xC1, b"\x01\x02")]
    out = engine.run(P.personalize_application(instance_aid=DEMO_INSTANCE_AID, dgis_or_tlvs=tlvs), mode=mode)
    assert out.completed
    assert engine.card.registry.personalization[DEMO_INSTANCE_AID][-1][1] == b"".join(
        t.encode() for t in tlvs
    )


def test_delete_security_domain_with_its_content(engine, mode):
    keys = create_ssd(engine, mode)[0]
    # the SSD gets content of its own: a load file and an instance
    engine.run(
        P.load_file(load_file_aid=DEMO_LOAD_FILE_AID, sd_aid=None, data=demo_load_file()),
        mode=mode,
        sd=SSD,
        kvn=0x20,
    )
    out = engine.run(
        P.install_application(
            load_file_aid=DEMO_LOAD_FILE_AID, module_aid=DEMO_MODULE_AID, instance_aid=DEMO_INSTANCE_AID
        ),
        mode=mode,
        sd=SSD,
        kvn=0x20,
        keys=keys,
    )
    assert out.completed
    inv = inventory(engine, mode)
    assert app_state(inv, DEMO_INSTANCE_AID) is not None and inv.applications[0].associated_sd_aid == SSD
    # the SSD's own view: only what is associated with it (no Global Registry)
    own = inventory(engine, mode, sd=SSD, kvn=0x20)
    assert own.isd is None and [e.aid for e in own.applications] == [DEMO_INSTANCE_AID]

    deleted = engine.run(P.delete_security_domain(aid=SSD), mode=mode)
    assert deleted.completed and deleted.results[-1].sw == 0x6A88
    inv = inventory(engine, mode)
    assert not sd_present(inv, SSD) and inv.applications == [] and len(inv.load_files) == 1
    registry_matches(inv, engine.card)
    # a session of the deleted SD cannot even be selected
    gone = engine.run(P.verify_keys(), mode="precomputed", sd=SSD, kvn=0x20, counter=1)
    assert gone.failed_label == "SELECT SD" and gone.failed_sw == 0x6A82


def test_read_status_matches_the_registry_with_continuations(engine, mode):
    # enough entries for GET STATUS 40 to need "next occurrence" answers (6310)
    for i in range(9):
        create_ssd(engine, mode, aid=AID(bytes.fromhex("A00000055900A0") + bytes([i])), kvn=0x20)
    outcome = engine.run(P.read_status(), mode=mode)
    assert outcome.completed
    assert 0x6310 in [r.sw for r in outcome.results]
    inv = parse_inventory(outcome)
    assert inv.complete and len(inv.security_domains) == 9
    registry_matches(inv, engine.card)
    assert inv.cplc is not None and inv.key_versions() == {ISD_KVN}
    assert '"complete":true' in inv.to_json()
    # too few continuations: the inventory says it is incomplete
    short = parse_inventory(engine.run(P.read_status(max_next=0), mode=mode))
    assert not short.complete and len(short.security_domains) < 9
