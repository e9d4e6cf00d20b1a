"""Wire format v1: round trips, strict refusals naming the field, and fuzzing that only ProtocolError escapes."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.protocol import (
    EXCHANGE_PATH,
    MAX_BODY_BYTES,
    PROTOCOL_VERSION,
    Command,
    ExchangeRequest,
    ExchangeResponse,
    ProtocolError,
    WorkItem,
    WorkResult,
    decode,
    encode,
    sw_matches,
)


def _item(**kw: object) -> WorkItem:
    fields: dict[str, object] = {
        "item": "job-1:0:1",
        "job": "3f2c6a1e-0000-4000-8000-000000000001",
        "kind": "apdu_script",
        "channel": 0,
        "commands": (Command(bytes.fromhex("00A4040008A000000151000000"), ("9000",)),),
        "deadline": "2030-01-01T00:00:00+00:00",
    }
    fields.update(kw)
    return WorkItem(**fields)  # type: ignore[arg-type]


def _response_json(**work: object) -> dict[str, object]:
    obj = ExchangeResponse(("a",), (_item(),), 30.0).to_json()
    obj["work"][0].update(work)  # type: ignore[index]
    return obj


def test_constants_match_the_contract() -> None:
    assert PROTOCOL_VERSION == 1
    assert MAX_BODY_BYTES == 256 * 1024
    assert EXCHANGE_PATH == "/agent/v1/exchange"


def test_a_response_survives_a_round_trip_through_bytes() -> None:
    response = ExchangeResponse(("x:1", "y:2"), (_item(), _item(item="b", deadline=None)), 12.5)
    assert ExchangeResponse.from_json(decode(encode(response.to_json()))) == response


def test_a_request_survives_a_round_trip_through_bytes() -> None:
    request = ExchangeRequest(
        {"version": "0.1.0", "backend": "soft", "se_serial": "C0FFEE01"},
        (
            WorkResult("a", "completed", (b"\x90\x00", bytes.fromhex("6F109000")), ""),
            WorkResult("b", "failed", (b"\x69\x82",), "command 0: SW 6982"),
        ),
        {"uptime_s": 12, "journal_pending": 2, "ok": True, "load": 0.5, "note": None},
    )
    assert ExchangeRequest.from_json(decode(encode(request.to_json()))) == request


def test_the_documented_request_example_parses() -> None:
    body = {
        "protocol": 1,
        "agent": {"version": "0.1.0", "backend": "soft"},
        "results": [{"item": "i1", "status": "completed", "responses": ["9000"], "detail": ""}],
        "health": {"uptime_s": 12, "journal_pending": 0},
    }
    request = ExchangeRequest.from_json(decode(json.dumps(body).encode()))
    assert request.results[0].responses == (b"\x90\x00",)


def test_expect_patterns_are_normalised_to_lowercase_and_match_with_wildcards() -> None:
    command = Command(b"\x00\xa4\x04\x00", ("61XX", "9000"))
    assert command.expect == ("61xx", "9000")
    assert sw_matches(0x6110, command.expect)
    assert sw_matches(0x9000, command.expect)
    assert not sw_matches(0x6982, command.expect)
    assert sw_matches(0x6982, ())
    assert sw_matches(0x63C2, ("xxc2",))
    assert not sw_matches(0x63C2, ("xxc3",))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"item": ""}, "work[0].item"),
        ({"item": "a b"}, "work[0].item"),
        ({"item": "x" * 129}, "work[0].item"),
        ({"job": 5}, "work[0].job"),
        ({"kind": "Apdu Script"}, "work[0].kind"),
        ({"channel": 20}, "work[0].channel"),
        ({"channel": True}, "work[0].channel"),
        ({"deadline": "tomorrow"}, "work[0].deadline"),
        ({"commands": "00A40400"}, "work[0].commands"),
        ({"commands": [{"apdu": "00A4", "expect": []}]}, "work[0].commands[0].apdu"),
        ({"commands": [{"apdu": "00 A4 04 00", "expect": []}]}, "work[0].commands[0].apdu"),
        ({"commands": [{"apdu": "00A4040", "expect": []}]}, "work[0].commands[0].apdu"),
        ({"commands": [{"apdu": "00A40400", "expect": ["900"]}]}, "work[0].commands[0].expect[0]"),
        ({"commands": [{"apdu": "00A40400", "expect": ["9x00"]}]}, "work[0].commands[0].expect[0]"),
        ({"commands": [{"apdu": "00A40400"}]}, "work[0].commands[0].expect"),
        ({"commands": [{"apdu": "00A40400", "expect": [], "le": 1}]}, "work[0].commands[0].le"),
        ({"commands": [{"apdu": "00A40400", "expect": []}] * 257}, "work[0].commands"),
        ({"commands": [{"apdu": "00" * 65545, "expect": []}]}, "work[0].commands[0].apdu"),
        ({"surprise": 1}, "work[0].surprise"),
    ],
)
def test_a_bad_work_item_is_refused_naming_its_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(ProtocolError) as e:
        ExchangeResponse.from_json(_response_json(**change))
    assert str(e.value).startswith(field + ":"), str(e.value)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"protocol": 2}, "protocol"),
        ({"protocol": "1"}, "protocol"),
        ({"poll_after": -1}, "poll_after"),
        ({"poll_after": "30"}, "poll_after"),
        ({"poll_after": True}, "poll_after"),
        ({"acks": ["ok", "bad id"]}, "acks[1]"),
        ({"acks": ["a"] * 65}, "acks"),
        ({"work": [None]}, "work[0]"),
        ({"extra": []}, "extra"),
    ],
)
def test_a_bad_response_envelope_is_refused_naming_its_field(change: dict[str, object], field: str) -> None:
    obj = ExchangeResponse((), (), 5).to_json()
    obj.update(change)
    with pytest.raises(ProtocolError) as e:
        ExchangeResponse.from_json(obj)
    assert str(e.value).startswith(field + ":"), str(e.value)


def test_a_missing_envelope_field_is_named() -> None:
    obj = ExchangeResponse((), (), 5).to_json()
    del obj["poll_after"]
    with pytest.raises(ProtocolError, match="^poll_after: missing"):
        ExchangeResponse.from_json(obj)


@pytest.mark.parametrize(
    ("result", "field"),
    [
        ({"item": "a", "status": "done", "responses": []}, "results[0].status"),
        ({"item": "a", "status": "completed", "responses": ["90"]}, "results[0].responses[0]"),
        ({"item": "a", "status": "completed", "responses": [], "detail": "x" * 1001}, "results[0].detail"),
        ({"item": "a", "status": "completed", "responses": ["9000"] * 257}, "results[0].responses"),
    ],
)
def test_a_bad_result_is_refused_naming_its_field(result: dict[str, object], field: str) -> None:
    obj = {"protocol": 1, "agent": {}, "results": [result], "health": {}}
    with pytest.raises(ProtocolError) as e:
        ExchangeRequest.from_json(obj)
    assert str(e.value).startswith(field + ":"), str(e.value)


@pytest.mark.parametrize(
    ("agent", "field"),
    [
        ({"Version": "1"}, "agent"),
        ({"version": {"nested": 1}}, "agent.version"),
        ({"version": "x" * 257}, "agent.version"),
        ({f"k{i}": i for i in range(33)}, "agent"),
    ],
)
def test_agent_and_health_are_small_flat_objects(agent: dict[str, object], field: str) -> None:
    with pytest.raises(ProtocolError) as e:
        ExchangeRequest.from_json({"protocol": 1, "agent": agent, "results": [], "health": {}})
    assert str(e.value).startswith(field + ":"), str(e.value)


def test_more_than_64_results_are_refused() -> None:
    with pytest.raises(ProtocolError, match="^results:"):
        ExchangeRequest({}, tuple(WorkResult(f"i{n}", "completed") for n in range(65)), {})


def test_messages_cannot_be_built_invalid_either() -> None:
    with pytest.raises(ProtocolError, match="^apdu:"):
        Command(b"\x00\xa4", ())
    with pytest.raises(ProtocolError, match="^status:"):
        WorkResult("a", "maybe")
    with pytest.raises(ProtocolError, match="^poll_after:"):
        ExchangeResponse((), (), float("nan"))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "is not JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b"\xff\xfe", "is not UTF-8"),
        (b'{"a": NaN}', "NaN is not JSON"),
        (b'{"a": 1, "a": 2}', "duplicate member"),
        (b"[" * 100000 + b"]" * 100000, "^body:"),
        (b" " * (MAX_BODY_BYTES + 1), "larger than"),
    ],
)
def test_decode_refuses_anything_but_a_json_object(data: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        decode(data)


def test_a_deadline_without_a_zone_is_read_as_utc() -> None:
    assert _item(deadline="1970-01-01T00:01:00").deadline_timestamp() == 60.0
    assert _item(deadline="1970-01-01T00:01:00Z").deadline_timestamp() == 60.0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
hexes = st.binary(max_size=8).map(lambda b: b.hex())
work_like = st.fixed_dictionaries(
    {
        "item": st.text(max_size=5) | st.integers(),
        "job": st.text(max_size=5),
        "kind": st.sampled_from(["apdu_script", "X", 1]),
        "channel": st.integers(-2, 25) | st.booleans(),
        "commands": st.lists(
            st.fixed_dictionaries(
                {"apdu": hexes | json_values, "expect": st.lists(st.text(max_size=4), max_size=2)}
            ),
            max_size=3,
        )
        | json_values,
    },
    optional={"deadline": st.none() | st.text(max_size=25) | st.integers()},
)
messages = st.fixed_dictionaries(
    {
        "protocol": st.sampled_from([1, 1, 2, "1", None]),
        "acks": st.lists(st.text(max_size=6), max_size=3) | json_values,
        "work": st.lists(work_like | json_values, max_size=3) | json_values,
        "poll_after": st.floats() | st.integers() | json_values,
    },
    optional={"agent": json_values, "results": json_values, "health": json_values},
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(messages, json_values))
def test_random_json_never_raises_anything_but_protocol_error(obj: object) -> None:
    for cls in (ExchangeResponse, ExchangeRequest, WorkItem, WorkResult, Command):
        try:
            cls.from_json(obj)
        except ProtocolError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_raise_anything_but_protocol_error_when_decoded(data: bytes) -> None:
    try:
        ExchangeResponse.from_json(decode(data))
    except ProtocolError:
        pass
