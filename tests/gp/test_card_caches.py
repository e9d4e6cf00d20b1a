"""The memo of read-only answers (GET STATUS, GET DATA) never serves a stale answer.

Every card content management command empties the memo (CardState.changed); these tests run each
mutating command between two rounds of read-only queries and check the second round against a
card rebuilt from the same state (empty memo), and against what the mutation must show.
"""

from __future__ import annotations

import json
import os

from gp import tlv
from gp.card import SD_LOAD_FILE_AID, SD_MODULE_AID, SoftCard
from gp.card.state import CardState
from gp.commands import (
    ClearKey,
    DataStructure,
    DeleteObject,
    GetData,
    GetStatus,
    InstallForInstall,
    InstallForPersonalization,
    InstallParameters,
    KeyType,
    LifeCycle,
    Privileges,
    PutKey,
    SetStatus,
    StatusScope,
    StoreData,
    parse_key_information,
    parse_status_response,
)
from tests.gp.cardkit import ISD, ISD_KEYS, ISD_KVN, SSD, SSD_KEYS, Terminal, new_card

QUERIES = [
    GetStatus(StatusScope.ISD).to_apdu(),
    GetStatus(StatusScope.APPLICATIONS).to_apdu(),
    GetStatus(StatusScope.LOAD_FILES).to_apdu(),
    GetStatus(StatusScope.LOAD_FILES_AND_MODULES).to_apdu(),
    GetData(0x66).to_apdu(),
    GetData(0x9F7F).to_apdu(),
    GetData(0xE0).to_apdu(),
    GetData(0x42).to_apdu(),
    GetData(0x45).to_apdu(),
    GetData(0xC1).to_apdu(),
    GetData(0xC2).to_apdu(),
]


def answers(t: Terminal) -> list[tuple[int, bytes]]:
    out = []
    for q in QUERIES:
        rsp = t.send(q)
        out.append((rsp.sw, rsp.data))
    return out


def fresh_answers(card: SoftCard, keys=ISD_KEYS, aid=ISD) -> list[tuple[int, bytes]]:
    """The same queries on a card rebuilt from ``card``'s state: an empty memo."""
    state = CardState.from_dict(json.loads(json.dumps(card.state_dict())))
    twin = SoftCard(state, path=None, state_key=None)
    got = answers(Terminal(twin).open(keys, aid=aid))
    # The twin's own INITIALIZE UPDATE stepped its counter once more than the live card's session.
    return [a for q, a in zip(QUERIES, got, strict=True) if q.p2 != 0xC1]


def live(t: Terminal) -> list[tuple[int, bytes]]:
    return [a for q, a in zip(QUERIES, answers(t), strict=True) if q.p2 != 0xC1]


def apps(t: Terminal) -> dict[bytes, object]:
    rsp = t.send(GetStatus(StatusScope.APPLICATIONS).to_apdu())
    if rsp.sw == 0x6A88:
        return {}
    return {bytes(e.aid): e for e in parse_status_response(rsp.data, StatusScope.APPLICATIONS)}


def test_every_mutation_shows_in_the_next_get_status_and_get_data():
    card = new_card(None)
    isd = Terminal(card).open()
    live(isd)  # fill the memo
    version = card._state.version

    # INSTALL: the new SSD is listed at once
    isd.ok(
        InstallForInstall(
            SD_LOAD_FILE_AID, SD_MODULE_AID, SSD, Privileges.SECURITY_DOMAIN, InstallParameters(b"")
        ).to_apdu()
    )
    assert card._state.version > version
    assert bytes(SSD) in apps(isd)
    assert live(isd) == fresh_answers(card)

    # SET STATUS: the SSD shows locked (and is no longer selectable), then unlocked
    other = Terminal(card, channel=1)
    assert Terminal(card).raw(bytes.fromhex("0070000001")).data == b"\x01"
    assert other.select(SSD).sw == 0x9000  # memoised SELECT answer
    isd.ok(SetStatus.lock(SSD).to_apdu())
    assert apps(isd)[bytes(SSD)].locked
    assert other.select(SSD).sw == 0x6A82
    assert live(isd) == fresh_answers(card)
    isd.ok(SetStatus.unlock(SSD).to_apdu())
    assert not apps(isd)[bytes(SSD)].locked
    assert other.select(SSD).sw == 0x9000
    assert Terminal(card).raw(bytes.fromhex("0070800100")).sw == 0x9000  # close it: DELETE comes

    # PUT KEY: a new ISD key set appears in the key information template
    before = parse_key_information(isd.ok(GetData(0xE0).to_apdu()))
    put = PutKey(0x31, tuple(ClearKey(KeyType.AES, k) for k in (SSD_KEYS.enc, SSD_KEYS.mac, SSD_KEYS.dek)))
    isd.ok(put.to_apdu(dek=ISD_KEYS.dek))
    after = parse_key_information(isd.ok(GetData(0xE0).to_apdu()))
    assert {k.kvn for k in before} == {ISD_KVN} and {k.kvn for k in after} == {ISD_KVN, 0x31}
    assert live(isd) == fresh_answers(card)

    # STORE DATA: a new IIN and CIN for the ISD show in GET DATA 42 / 45
    iin, cin = b"\x42\x99\x01", os.urandom(8)
    old_iin = isd.ok(GetData(0x42).to_apdu())
    records = tlv.encode(0x42, iin) + tlv.encode(0x45, cin)
    isd.ok(StoreData(0, records, last=True, structure=DataStructure.BER_TLV).to_apdu())
    assert old_iin != tlv.encode(0x42, iin)
    assert isd.ok(GetData(0x42).to_apdu()) == tlv.encode(0x42, iin)
    assert isd.ok(GetData(0x45).to_apdu()) == tlv.encode(0x45, cin)
    assert live(isd) == fresh_answers(card)

    # INSTALL [for personalization] + PUT KEY on the SSD: its own key information changes
    isd.ok(InstallForPersonalization(SSD).to_apdu())
    isd.ok(PutKey(0x30, put.keys).to_apdu(dek=ISD_KEYS.dek))
    ssd = Terminal(card).open(SSD_KEYS, aid=SSD)
    assert {k.kvn for k in parse_key_information(ssd.ok(GetData(0xE0).to_apdu()))} == {0x30}
    assert live(ssd) == fresh_answers(card, SSD_KEYS, SSD)

    # DELETE: the SSD disappears from the ISD's listing
    isd = Terminal(card).open()
    live(isd)
    isd.ok(DeleteObject(SSD).to_apdu())
    assert bytes(SSD) not in apps(isd)
    assert live(isd) == fresh_answers(card)


def test_a_refused_mutation_leaves_the_memo_consistent():
    card = new_card(None)
    isd = Terminal(card).open()
    first = live(isd)
    # INSTALL of a module the load file lacks: refused, the state is restored, answers unchanged
    missing = InstallForInstall(SD_LOAD_FILE_AID, b"\xa0\x00\x00\x00\x01\x02\x03", SSD, Privileges(0))
    assert isd.send(missing.to_apdu()).sw != 0x9000
    assert live(isd) == first == fresh_answers(card)


def test_a_mutation_on_another_channel_shows_on_this_one():
    card = new_card(None)
    isd = Terminal(card).open()
    assert Terminal(card).raw(bytes.fromhex("0070000001")).data == b"\x01"
    other = Terminal(card, channel=1).open()
    assert apps(other) == {}
    isd.ok(
        InstallForInstall(
            SD_LOAD_FILE_AID, SD_MODULE_AID, SSD, Privileges.SECURITY_DOMAIN, InstallParameters(b"")
        ).to_apdu()
    )
    assert apps(other)[bytes(SSD)].life_cycle == LifeCycle(0x07)


def test_the_sequence_counter_is_never_memoised():
    card = new_card(None, sequence_counter=5)
    for expected in (6, 7, 8):
        t = Terminal(card).open()
        assert t.ok(GetData(0xC1).to_apdu()) == tlv.encode(0xC1, expected.to_bytes(3, "big"))


def test_the_static_key_contexts_are_built_once_per_key_set():
    card = new_card(None)
    keyset = card._state.isd.keys.sets[ISD_KVN]
    first = keyset.scp03()
    for _ in range(3):
        Terminal(card).open()
    assert keyset.scp03() is first
