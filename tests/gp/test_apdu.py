"""gp.apdu: ISO/IEC 7816-3 cases, class-byte coding of logical channels, status words."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gp.apdu import SW, CommandAPDU, ResponseAPDU, describe_sw, is_success_or_warning, mac_class_byte
from gp.errors import EncodeError, GPError, ParseError

h = bytes.fromhex


@pytest.mark.parametrize(
    ("apdu", "raw"),
    [
        (CommandAPDU(0x80, 0xF2, 0x20, 0x02), "80F22002"),
        (CommandAPDU(0x80, 0xCA, 0x00, 0x66, le=256), "80CA006600"),
        (CommandAPDU(0x80, 0xCA, 0x00, 0x66, le=0x10), "80CA006610"),
        (CommandAPDU(0x80, 0xF2, 0x20, 0x02, h("4F00")), "80F22002024F00"),
        (CommandAPDU(0x80, 0xF2, 0x80, 0x02, h("4F00"), le=256), "80F28002024F0000"),
        (CommandAPDU(0x00, 0xB0, 0x00, 0x00, le=65536, extended=True), "00B00000000000"),
        (CommandAPDU(0x00, 0xB0, 0x00, 0x00, le=257, extended=True), "00B00000000101"),
        (CommandAPDU(0x00, 0xB0, 0x00, 0x00, le=256, extended=True), "00B00000000100"),
        (CommandAPDU(0x00, 0xD6, 0x00, 0x00, h("AA"), extended=True), "00D60000000001AA"),
        (CommandAPDU(0x00, 0xD6, 0x00, 0x00, h("AA"), le=65536, extended=True), "00D60000000001AA0000"),
    ],
    ids=["case1", "case2-le256", "case2", "case3", "case4", "case2E-65536", "case2E", "case2E-forced",
         "case3E", "case4E"],
)  # fmt: skip
def test_each_iso_case_encodes_and_parses_back(apdu: CommandAPDU, raw: str) -> None:
    assert apdu.encode() == h(raw)
    assert CommandAPDU.parse(h(raw)) == apdu


def test_long_data_switches_to_extended_length_automatically() -> None:
    apdu = CommandAPDU(0x80, 0xE8, 0x00, 0x00, bytes(300), le=256)
    raw = apdu.encode()
    assert raw[4:7] == b"\x00\x01\x2c" and raw[-2:] == b"\x01\x00"
    assert CommandAPDU.parse(raw).data == bytes(300)


def test_case_numbers_follow_iso_7816_3() -> None:
    assert [
        CommandAPDU(0, 0, 0, 0, d, le).case for d, le in [(b"", None), (b"", 1), (b"x", None), (b"x", 1)]
    ] == [
        1,
        2,
        3,
        4,
    ]


@pytest.mark.parametrize(
    ("raw", "offset"),
    [
        ("", 0),
        ("80F220", 3),
        ("FFF22002", 0),
        ("80F2200203AABB", 4),  # Lc 3, two bytes follow
        ("80F2200201AABBCC", 4),  # Lc 1, three bytes follow
        ("80F220020000", 6),  # extended marker truncated
        ("00B000000000000000", 5),  # extended Lc 0000 followed by bytes
        ("00D60000000003AABB", 5),  # extended Lc 3, two bytes follow
    ],
)
def test_malformed_command_apdus_raise_parse_error_naming_the_offset(raw: str, offset: int) -> None:
    with pytest.raises(ParseError) as caught:
        CommandAPDU.parse(h(raw))
    assert caught.value.offset == offset
    assert f"offset {offset}" in str(caught.value)


@pytest.mark.parametrize(
    ("cla", "ins", "le"),
    [(256, 0xCA, None), (0xFF, 0xCA, None), (0x80, 0xCA, 0), (0x80, 0xCA, 65537), (0x80, -1, None)],
)
def test_out_of_range_fields_are_refused(cla: int, ins: int, le: int | None) -> None:
    with pytest.raises(EncodeError):
        CommandAPDU(cla, ins, 0, 0, le=le)


@pytest.mark.parametrize(
    ("cla", "channel", "sm", "proprietary"),
    [
        (0x00, 0, False, False),
        (0x03, 3, False, False),
        (0x80, 0, False, True),
        (0x84, 0, True, True),
        (0x87, 3, True, True),
        (0x0C, 0, True, False),
        (0x40, 4, False, False),
        (0x6F, 19, True, False),
        (0xC0, 4, False, True),
        (0xE5, 9, True, True),
        (0xCF, 19, False, True),
    ],
)
def test_class_byte_reveals_channel_and_secure_messaging(
    cla: int, channel: int, sm: bool, proprietary: bool
) -> None:
    apdu = CommandAPDU(cla, 0xCA, 0, 0)
    assert (apdu.channel, apdu.secure_messaging, apdu.is_proprietary) == (channel, sm, proprietary)


@pytest.mark.parametrize("channel", range(20))
def test_with_channel_moves_a_gp_command_to_any_of_twenty_channels(channel: int) -> None:
    plain = CommandAPDU(0x80, 0xF2, 0x40, 0x02, h("4F00")).with_channel(channel)
    secured = CommandAPDU(0x84, 0xF2, 0x40, 0x02, h("4F00")).with_channel(channel)
    assert plain.channel == secured.channel == channel
    assert plain.is_proprietary and secured.is_proprietary
    assert not plain.secure_messaging and secured.secure_messaging
    assert secured.with_secure_messaging(False).cla == plain.cla
    assert mac_class_byte(secured.cla) == 0x84


def test_channels_outside_zero_to_nineteen_are_refused() -> None:
    with pytest.raises(EncodeError):
        CommandAPDU(0x80, 0xCA, 0, 0).with_channel(20)


def test_rfu_class_bytes_have_no_channel() -> None:
    with pytest.raises(EncodeError):
        _ = CommandAPDU(0xA0, 0xA4, 0, 0).channel


def test_chaining_bit_survives_channel_changes() -> None:
    chained = CommandAPDU(0x90, 0xE8, 0, 0, b"x")
    assert chained.is_chained
    assert chained.with_channel(5).is_chained
    assert chained.with_channel(5).with_channel(1).cla == 0x91


def test_response_apdu_splits_data_and_status_word() -> None:
    rsp = ResponseAPDU.parse(h("E300 6310"))
    assert (rsp.data, rsp.sw1, rsp.sw2, rsp.sw) == (h("E300"), 0x63, 0x10, 0x6310)
    assert rsp.encode() == h("E3006310")
    assert ResponseAPDU.parse(h("9000")).ok


@pytest.mark.parametrize("raw", ["", "90"])
def test_response_apdu_needs_two_status_bytes(raw: str) -> None:
    with pytest.raises(ParseError):
        ResponseAPDU.parse(h(raw))


@pytest.mark.parametrize(
    ("sw", "text"),
    [
        (0x9000, "success"),
        (0x6A88, "referenced data not found"),
        (0x6982, "security status"),
        (0x6985, "conditions of use"),
        (0x6A80, "incorrect values"),
        (0x6A82, "not found"),
        (0x6A84, "memory"),
        (0x6A86, "P1 P2"),
        (0x6581, "memory failure"),
        (0x6700, "wrong length"),
        (0x6D00, "instruction"),
        (0x6E00, "class"),
        (0x6310, "more data"),
        (0x6110, "16 more"),
        (0x6C20, "Le=32"),
        (0x63C2, "2 retries"),
        (0x1234, "unknown"),
    ],
)
def test_status_words_have_readable_names(sw: int, text: str) -> None:
    assert text in describe_sw(sw)


def test_status_word_constants_carry_their_values() -> None:
    assert (SW.OK, SW.REFERENCED_DATA_NOT_FOUND, SW.MORE_DATA_AVAILABLE) == (0x9000, 0x6A88, 0x6310)


def test_only_9000_62xx_and_63xx_count_as_protected_answers() -> None:
    assert [is_success_or_warning(sw) for sw in (0x9000, 0x6200, 0x63C1, 0x6A88, 0x6100, 0x9001)] == [
        True,
        True,
        True,
        False,
        False,
        False,
    ]


# --- fuzzing ------------------------------------------------------------------------------------


@given(st.binary(max_size=600))
def test_random_bytes_never_raise_anything_but_parse_error(raw: bytes) -> None:
    try:
        apdu = CommandAPDU.parse(raw)
    except ParseError:
        return
    assert apdu.encode() == raw  # whatever parses is re-encoded to the same bytes


@given(st.binary(max_size=300))
def test_random_responses_parse_whenever_two_bytes_are_present(raw: bytes) -> None:
    try:
        rsp = ResponseAPDU.parse(raw)
    except ParseError:
        assert len(raw) < 2
        return
    assert rsp.encode() == raw


@st.composite
def command_apdus(draw: st.DrawFn) -> CommandAPDU:
    cla = draw(st.integers(0, 0xFE))
    ins, p1, p2 = (draw(st.integers(0, 0xFF)) for _ in range(3))
    data = draw(st.one_of(st.binary(max_size=260), st.binary(min_size=250, max_size=1200)))
    le = draw(st.one_of(st.none(), st.integers(1, 256), st.integers(1, 65536)))
    extended = draw(st.booleans())
    return CommandAPDU(cla, ins, p1, p2, data, le, extended)


@given(command_apdus())
def test_encode_then_parse_returns_the_same_command(apdu: CommandAPDU) -> None:
    parsed = CommandAPDU.parse(apdu.encode())
    assert (parsed.cla, parsed.ins, parsed.p1, parsed.p2, parsed.data, parsed.le) == (
        apdu.cla,
        apdu.ins,
        apdu.p1,
        apdu.p2,
        apdu.data,
        apdu.le,
    )
    assert parsed.uses_extended_length == apdu.uses_extended_length
    assert parsed.encode() == apdu.encode()


@given(command_apdus(), st.integers(0, 19), st.booleans())
def test_channel_and_secure_messaging_helpers_compose(apdu: CommandAPDU, channel: int, sm: bool) -> None:
    try:
        moved = apdu.with_channel(channel).with_secure_messaging(sm)
    except GPError:
        # only RFU classes have no channel coding, and a chained, secured GP command on channel 19
        # would need CLA 'FF', which ISO/IEC 7816-3 reserves
        rfu = apdu.cla & 0x60 == 0x20
        assert rfu or (channel == 19 and apdu.is_chained and apdu.is_proprietary)
        return
    assert moved.channel == channel
    assert moved.secure_messaging == sm
    assert moved.is_proprietary == apdu.is_proprietary
