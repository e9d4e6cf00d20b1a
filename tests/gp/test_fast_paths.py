"""The hot-path shortcuts agree with the general code they bypass, and the card writes only what changed."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from gp import tlv
from gp.apdu import CommandAPDU, split_short
from gp.card import SoftCard, storage
from gp.card.softcard import COUNTER_RESERVATION
from gp.commands import GetStatus, InstallForInstall, StatusScope
from gp.commands.status import RegistryEntry
from gp.commands.types import AID, LifeCycle, Privileges
from gp.errors import GPError, ParseError
from gp.scp03 import CardSession, HostSession, StaticKeys
from tests.gp.cardkit import ISD, ISD_KEYS, ISD_KVN, Terminal, new_card

KEYS = StaticKeys(bytes(range(16)), bytes(range(16, 32)), bytes(range(32, 48)))


@settings(max_examples=300)
@given(raw=st.binary(max_size=300))
def test_split_short_agrees_with_parse(raw):
    split = split_short(raw)
    try:
        cmd = CommandAPDU.parse(raw)
    except ParseError:
        assert split is None
        return
    if cmd.extended:
        assert split is None
        return
    assert split is not None
    data, le_field = split
    assert data == cmd.data
    assert (le_field[0] or 256 if le_field else None) == cmd.le
    assert cmd.encode() == raw


def _pair(level: int, host_challenge: bytes) -> tuple[HostSession, CardSession]:
    host = HostSession(KEYS, security_level=level, host_challenge=host_challenge, key_version=0x30)
    card, response = CardSession.begin(
        KEYS,
        host_challenge=host_challenge,
        key_version=0x30,
        i_param=0x70,
        sequence_counter=5,
        aid=bytes(ISD),
    )
    assert card.external_authenticate(host.external_authenticate(response)) == 0x9000
    return host, card


short_commands = st.builds(
    lambda cla, ins, p1, p2, data, le: CommandAPDU(cla, ins, p1, p2, data, le).encode(),
    st.sampled_from(
        [0x00, 0x01, 0x03, 0x10, 0x40, 0x4F, 0x80, 0x81, 0x83, 0x90, 0xC0, 0xC5, 0xD3, 0x20, 0xA0]
    ),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
    st.binary(max_size=250),
    st.none() | st.integers(1, 256),
)


@settings(max_examples=100, deadline=None)
@given(
    level=st.sampled_from([0x01, 0x03, 0x13, 0x33]), commands=st.lists(short_commands, min_size=1, max_size=4)
)
def test_host_wrap_fast_path_is_byte_identical_to_the_general_path(level, commands):
    challenge = os.urandom(8)
    fast, card = _pair(level, challenge)
    general, _ = _pair(level, challenge)
    for command in commands:
        outcomes = []
        for wrap in (fast.wrap, general._wrap_general):
            try:
                outcomes.append(("ok", wrap(command)))
            except GPError as e:
                outcomes.append(("error", type(e), str(e)))
        assert outcomes[0] == outcomes[1]
        assert fast.encryption_counter == general.encryption_counter
        assert fast.mac_chaining_value == general.mac_chaining_value
        if outcomes[0][0] != "ok":
            break  # the host counted a command the card never saw: the session is out of step
        assert CommandAPDU.parse(card.unwrap_command(outcomes[0][1])).encode() == (
            CommandAPDU.parse(command).encode()
        )
        response = card.wrap_response(b"\x01\x02\x03", 0x9000)
        assert fast.unwrap(response) == b"\x01\x02\x03\x90\x00"
        general.unwrap(response)


@given(prefix=st.binary(max_size=20), p2=st.sampled_from([0x00, 0x01, 0x02, 0x03]))
def test_get_status_fast_parse_agrees_with_the_tlv_parse(prefix, p2):
    data = tlv.encode(0x4F, prefix)
    apdu = CommandAPDU(0x80, 0xF2, 0x40, p2, data, 256)
    padded = CommandAPDU(0x80, 0xF2, 0x40, p2, data + tlv.encode(0x5C, b"\x4f"), 256)  # general path
    try:
        fast = GetStatus.from_apdu(apdu)
    except ParseError as e:
        assert len(prefix) > 16 and e.offset == 7
        return
    assert fast == GetStatus(StatusScope.APPLICATIONS, prefix, bool(p2 & 1), bool(p2 & 2), None)
    general = GetStatus.from_apdu(padded)
    assert (general.aid_prefix, general.next_occurrence, general.tlv_format) == (
        fast.aid_prefix,
        fast.next_occurrence,
        fast.tlv_format,
    )


def test_registry_entry_encoding_matches_tlv_objects():
    entry = RegistryEntry(
        AID("A0000005590010"),
        LifeCycle(0x07),
        Privileges.SECURITY_DOMAIN,
        AID("A0000001515350"),
        bytes(ISD),
        b"\x01\x00",
        (AID("A000000151535041"),),
    )
    items = [
        tlv.TLV.build(0x4F, entry.aid),
        tlv.TLV.build(0x9F70, b"\x07"),
        tlv.TLV.build(0xC5, Privileges.SECURITY_DOMAIN.encode()),
        tlv.TLV.build(0xC4, entry.load_file_aid or b""),
        tlv.TLV.build(0xCE, b"\x01\x00"),
        tlv.TLV.build(0x84, entry.modules[0]),
        tlv.TLV.build(0xCC, bytes(ISD)),
    ]
    assert entry.encode_tlv() == tlv.encode(0xE3, items)
    assert entry.encode_tlv(b"\x4f\xc4") == tlv.encode(0xE3, [items[0], items[3]])


READ_ONLY = [
    bytes.fromhex("80F28002024F0000"),
    bytes.fromhex("80F22002024F0000"),
    bytes.fromhex("80CA006600"),
    bytes.fromhex("80CA9F7F00"),
    bytes.fromhex("80CA00E000"),
    bytes.fromhex("80CA00C100"),
]


def _count_saves(monkeypatch) -> list[str]:
    calls: list[str] = []
    original = storage.save

    def counting(path: str, payload: bytes, key: bytes) -> None:
        calls.append(path)
        original(path, payload, key)

    monkeypatch.setattr(storage, "save", counting)
    return calls


def test_read_only_sessions_write_once_per_counter_reservation(tmp_path, monkeypatch):
    path = str(tmp_path / "card.se")
    card = new_card(path)
    saves = _count_saves(monkeypatch)
    counter = card.sequence_counter(ISD, ISD_KVN)
    sessions = COUNTER_RESERVATION + 3
    for _ in range(sessions):
        t = Terminal(card).open(level=0x33)  # SELECT, INITIALIZE UPDATE, EXTERNAL AUTHENTICATE
        for apdu in READ_ONLY:
            t.ok(apdu)
        assert t.send(bytes.fromhex("80CA00FE00")).sw == 0x6A88  # refused: nothing to restore
        t.select(ISD)
    assert len(saves) == 2  # the first INITIALIZE UPDATE and the one that used up the reservation
    assert card.sequence_counter(ISD, ISD_KVN) == counter + sessions
    assert card.reserved_until(ISD, ISD_KVN) == counter + 2 * COUNTER_RESERVATION
    assert card.close() and len(saves) == 3
    assert SoftCard.open(path).state_dict() == card.state_dict()
    assert card.close() and len(saves) == 3  # nothing outstanding: nothing written


def test_an_in_memory_card_keeps_the_counter_and_still_rolls_back_edits():
    card = new_card(None)
    t = Terminal(card).open(level=0x33)
    counter = card.sequence_counter(ISD, ISD_KVN)
    before = card.state_dict()
    # INSTALL [for install] from a load file the card does not have: refused, the state untouched.
    missing = InstallForInstall(
        AID("A0000005590099"), AID("A000000559009901"), AID("A00000055900990101"), Privileges(0)
    )
    assert t.send(missing.to_apdu()).sw == 0x6A88
    assert card.state_dict() == before
    Terminal(card).open(level=0x01)
    assert card.sequence_counter(ISD, ISD_KVN) == counter + 1


def test_put_key_replaces_the_cached_static_keys(tmp_path):
    card = new_card(None)
    keyset = card._state.isd.keys.sets[ISD_KVN]
    first = keyset.scp03()
    assert keyset.scp03() is first
    keyset.keys[2].value = bytes(16)  # edited in place: the cache must notice
    assert keyset.scp03() is not first and keyset.scp03().mac == bytes(16)
    assert first is not None and first.enc == ISD_KEYS.enc


@settings(max_examples=60, deadline=None)
@given(
    level=st.sampled_from([0x01, 0x03, 0x13, 0x33]),
    steps=st.lists(
        st.tuples(
            st.sampled_from(READ_ONLY + [bytes.fromhex("80CA00FE00"), bytes.fromhex("00CA006600")]),
            st.sampled_from(["as is", "flip", "truncate", "extend", "plain cla"]),
        ),
        min_size=1,
        max_size=6,
    ),
)
def test_the_dispatcher_shortcut_answers_like_the_general_path(level, steps):
    challenge = os.urandom(8)
    cards, hosts = [], []
    for fast in (True, False):
        card = new_card(None, sequence_counter=9, serial=b"\x01\x02\x03\x04")
        card._dispatcher.fast_path = fast
        t = Terminal(card)
        t.select(ISD)
        host = HostSession(ISD_KEYS, security_level=level, host_challenge=challenge, key_version=ISD_KVN)
        rsp = card.transmit(host.initialize_update())
        assert card.transmit(host.external_authenticate(rsp[:-2])) == b"\x90\x00"
        cards.append(card)
        hosts.append(host)
    for command, how in steps:
        wrapped = [h.wrap(command) for h in hosts]
        assert wrapped[0] == wrapped[1]
        apdu = bytearray(wrapped[0])
        if how == "flip":
            apdu[-2] ^= 0x01
        elif how == "truncate":
            apdu = apdu[:-1]
        elif how == "extend":
            apdu += b"\x00\x00"
        elif how == "plain cla":
            apdu[0] &= 0xF3
        answers = [c.transmit(bytes(apdu)) for c in cards]
        assert answers[0] == answers[1]
    assert cards[0].state_dict() == cards[1].state_dict()
