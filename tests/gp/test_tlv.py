"""gp.tlv: BER-TLV as GlobalPlatform uses it; fuzzed so that no input crashes the parser."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gp import tlv
from gp.errors import EncodeError, ParseError
from gp.tlv import TLV

h = bytes.fromhex

# A GET STATUS entry as printed in omfgp's tests/omfgp/scp_test.py (ISD, TLV format).
GET_STATUS_ENTRY = h(
    "E32A4F08A0000001510000009F700107C5039EFE80C407A0000000620001CE020100CC08A000000151000000"
)


def test_get_status_entry_parses_into_nested_children() -> None:
    (entry,) = tlv.parse_all(GET_STATUS_ENTRY)
    assert entry.tag == 0xE3 and entry.constructed
    assert [child.tag for child in entry] == [0x4F, 0x9F70, 0xC5, 0xC4, 0xCE, 0xCC]
    assert entry.find(0x4F) == TLV(0x4F, h("A000000151000000"))
    assert entry.find(0x9F70).value == h("07")  # type: ignore[union-attr]
    assert entry.encode() == GET_STATUS_ENTRY


def test_find_searches_depth_first_through_every_level() -> None:
    data = tlv.encode(0xE3, [TLV.build(0xA5, [TLV.build(0x9F70, h("07"))])]) + tlv.encode(0x9F70, h("0F"))
    tlvs = tlv.parse_all(data)
    assert tlv.find(tlvs, 0x9F70).value == h("07")  # type: ignore[union-attr]
    assert [t.value for t in tlv.find_all(tlvs, 0x9F70)] == [h("07"), h("0F")]
    assert tlv.find(tlvs, 0x42) is None


@pytest.mark.parametrize(
    ("tag", "raw"),
    [
        (0x4F, "4F"),
        (0x9F70, "9F70"),
        (0x5F20, "5F20"),
        (0xBF21, "BF21"),
        (0x7F49, "7F49"),
        (0x9F8101, "9F8101"),
    ],
)
def test_multi_byte_tags_encode_as_their_bytes(tag: int, raw: str) -> None:
    assert tlv.encode_tag(tag) == h(raw)
    assert tlv.parse_one(tlv.encode(tag, h("8001AA"))).tag == tag


@pytest.mark.parametrize(
    ("length", "raw"),
    [
        (0, "00"),
        (0x7F, "7F"),
        (0x80, "8180"),
        (0xFF, "81FF"),
        (0x100, "820100"),
        (0xFFFF, "82FFFF"),
        (0x10000, "83010000"),
    ],
)
def test_lengths_use_the_shortest_ber_form(length: int, raw: str) -> None:
    assert tlv.encode_length(length) == h(raw)


def test_long_form_lengths_parse_back() -> None:
    for size in (127, 128, 255, 256, 70000):
        (parsed,) = tlv.parse_all(tlv.encode(0xC9, bytes(size)))
        assert len(parsed.value) == size


def test_non_minimal_lengths_from_cards_are_accepted() -> None:
    assert tlv.parse_one(h("C98105AABBCCDDEE")).value == h("AABBCCDDEE")


@pytest.mark.parametrize("tag", [0x1F, 0x9F, 0x9F80, 0x4F4F, 0xFF01, 0x9F808080FF, 0])
def test_malformed_tags_are_refused_when_encoding(tag: int) -> None:
    with pytest.raises(EncodeError):
        tlv.encode_tag(tag)


@pytest.mark.parametrize(
    ("raw", "offset", "problem"),
    [
        ("9F", 1, "truncated"),
        ("4F", 1, "length expected"),
        ("4F05AABB", 2, "overruns"),
        ("4F80", 1, "indefinite"),
        ("4F85", 1, "not supported"),
        ("4F82AA", 1, "truncated"),
        ("00", 0, "cannot start"),
        ("E3044F03AABB", 4, "overruns"),  # child overruns its parent: offset is absolute
        ("9F8181818101", 4, "longer than"),
    ],
)
def test_malformed_input_raises_parse_error_naming_offset_and_problem(
    raw: str, offset: int, problem: str
) -> None:
    with pytest.raises(ParseError) as caught:
        tlv.parse_all(h(raw))
    assert caught.value.offset == offset
    assert problem in str(caught.value)


def test_padding_bytes_are_skipped_only_on_request() -> None:
    data = h("00FF4F01AA0000")
    assert tlv.parse_all(data, allow_padding=True) == [TLV(0x4F, h("AA"))]
    with pytest.raises(ParseError):
        tlv.parse_all(data)


def test_parse_one_wants_exactly_one_object() -> None:
    with pytest.raises(ParseError, match="follow"):
        tlv.parse_one(h("4F01AA4F01BB"))
    with pytest.raises(ParseError, match="empty"):
        tlv.parse_one(b"")


def test_nesting_beyond_the_depth_limit_is_refused_not_recursed() -> None:
    data = b""
    for _ in range(tlv.MAX_DEPTH + 5):
        data = tlv.encode(0xA0, data)
    with pytest.raises(ParseError, match="nesting"):
        tlv.parse_all(data)


def test_build_accepts_children_or_raw_constructed_value() -> None:
    built = TLV.build(0xEF, [TLV.build(0xC7, h("0100")), TLV.build(0xC8, h("0200"))])
    assert built.encode() == h("EF08C7020100C8020200")
    assert TLV.build(0xEF, built.value) == built


# --- fuzzing ------------------------------------------------------------------------------------


@given(st.binary(max_size=400), st.booleans())
def test_random_bytes_never_raise_anything_but_parse_error(raw: bytes, padding: bool) -> None:
    try:
        tlv.parse_all(raw, allow_padding=padding)
    except ParseError as error:
        assert 0 <= error.offset <= len(raw)


@st.composite
def tags(draw: st.DrawFn, constructed: bool) -> int:
    first = draw(st.integers(0, 0xFE).filter(lambda b: bool(b & 0x20) == constructed and b != 0x00))
    if first & 0x1F != 0x1F:
        return first
    middle = draw(st.lists(st.integers(0x80, 0xFF), max_size=2))
    last = draw(st.integers(0x00, 0x7F))
    return int.from_bytes(bytes([first, *middle, last]), "big")


def tlv_trees() -> st.SearchStrategy[TLV]:
    primitive = st.builds(TLV.build, tags(constructed=False), st.binary(max_size=300))
    return st.recursive(
        primitive,
        lambda children: st.builds(TLV.build, tags(constructed=True), st.lists(children, max_size=4)),
        max_leaves=12,
    )


@given(st.lists(tlv_trees(), max_size=4))
def test_encode_then_parse_returns_the_same_tree(trees: list[TLV]) -> None:
    data = b"".join(t.encode() for t in trees)
    assert tlv.parse_all(data) == trees


@given(st.binary(max_size=200))
def test_whatever_parses_re_encodes_to_an_equal_tree(raw: bytes) -> None:
    try:
        parsed = tlv.parse_all(raw)
    except ParseError:
        return
    assert tlv.parse_all(b"".join(t.encode() for t in parsed)) == parsed
