"""Token operations (agent/tokenops.py) on a SoftHSMv2 token behind the OP-TEE profile: each
outcome, idempotence by outcome, and the KCV the portal records."""

from __future__ import annotations

import os

import pytest

from agent import tokenops
from gp import tokenwrap

AID = "A0000001515350AA01"


def _receive(token, key, kvn=0x30, **extra):
    env = tokenwrap.wrap_for_token(key, token.receive_public_point(), tokenwrap.master_key_label(AID, kvn))
    return tokenops.execute(
        token,
        tokenops.encode_op("receive_key", expect=["received", "present"], envelope=env.to_json(), **extra),
    )


def _kcv(key):
    from jobs.tee import key_check_value  # the portal's side of the same value

    return key_check_value(key)


def test_receive_then_the_same_key_again_is_present_and_a_different_one_a_conflict(token):
    key = os.urandom(16)
    first = _receive(token, key, kcv=_kcv(key))
    assert (first.outcome, first.ok, first.data["kcv"]) == ("received", True, _kcv(key))
    # a retried item (a fresh envelope of the same key) changes nothing
    again = _receive(token, key)
    assert (again.outcome, again.ok, again.data["kcv"]) == ("present", True, _kcv(key))
    other = _receive(token, os.urandom(16))
    assert (other.outcome, other.ok) == ("conflict", False)
    assert [k.label for k in token.list_keys()] == [f"tessera/sd/{AID}/30"]
    assert token.cmac(f"tessera/sd/{AID}/30", bytes(16))[:3].hex().upper() == _kcv(key)


def test_a_declared_kcv_that_differs_leaves_no_key(token):
    result = _receive(token, os.urandom(32), kcv="000000")
    assert (result.outcome, result.ok) == ("kcv_mismatch", False)
    assert token.list_keys() == []


def test_a_tampered_envelope_is_rejected_and_leaves_nothing(token):
    env = tokenwrap.wrap_for_token(os.urandom(16), token.receive_public_point(), f"tessera/sd/{AID}/30")
    doc = env.to_json()
    doc["wrapped"] = ("00" if doc["wrapped"][:2] != "00" else "11") + doc["wrapped"][2:]
    result = tokenops.execute(token, tokenops.encode_op("receive_key", expect=["received"], envelope=doc))
    assert (result.outcome, result.ok) == ("rejected", False)
    assert "key confirmation failed" in result.data["detail"]
    assert token.list_keys() == []


def test_delete_key_delete_sd_and_list(token):
    for kvn in (0x30, 0x31):
        assert _receive(token, os.urandom(16), kvn=kvn).ok
    assert _receive(token, os.urandom(16), kvn=0x30).outcome == "conflict"
    listed = tokenops.execute(token, tokenops.encode_op("list", expect=["listed"], prefix="tessera/sd/"))
    assert [row[:2] for row in listed.data["keys"]] == [
        [f"tessera/sd/{AID}/30", 16],
        [f"tessera/sd/{AID}/31", 16],
    ]
    op = tokenops.encode_op("delete_key", expect=["deleted", "absent"], label=f"tessera/sd/{AID}/30")
    assert tokenops.execute(token, op).outcome == "deleted"
    assert tokenops.execute(token, op).outcome == "absent"  # idempotent
    op = tokenops.encode_op("delete_sd", expect=["deleted", "absent"], aid=AID)
    first = tokenops.execute(token, op)
    assert (first.outcome, first.data["count"]) == ("deleted", 1)
    assert tokenops.execute(token, op).outcome == "absent"
    assert token.list_keys() == []


def test_answers_round_trip_and_never_carry_a_key(token):
    key = os.urandom(24)
    result = _receive(token, key)
    answer, ok = tokenops.decode_result(result.encode())
    assert ok and answer["outcome"] == "received"
    assert key.hex() not in result.encode().hex() and key.hex().upper() not in result.encode().hex().upper()


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"op": "format_token", "expect": ["done"]}, "unknown operation"),
        ({"op": "delete_key", "expect": ["gone"], "label": "tessera/sd/A000000151/30"}, "expect must list"),
        ({"op": "delete_key", "expect": ["deleted"], "label": "tessera/identity"}, "only SD keys"),
        ({"op": "delete_sd", "expect": ["deleted"], "aid": "a0"}, "aid must be"),
        ({"op": "list", "expect": ["listed"], "prefix": "tessera/"}, "prefix must start"),
        ({"op": "list", "expect": ["listed"], "prefix": "tessera/sd/", "x": 1}, "unknown field"),
        ({"op": "receive_key", "expect": ["received"], "envelope": {"v": 1}}, "receive_key:"),
    ],
)
def test_malformed_operations_are_refused_before_the_token(token, doc, message):
    import json

    with pytest.raises(tokenops.TokenOpError, match=message):
        tokenops.execute(token, json.dumps(doc).encode())
    with pytest.raises(tokenops.TokenOpError):
        tokenops.decode_op(b"\xff\xfe")
