"""gp.scp11.HostSession against the SCP11a / SCP11c traces published by Samsung OpenSCP-Java.

Source: repository ``Samsung/OpenSCP-Java``, commit ``6696c01834b7b234c9d3f93378b34872747e2dfc``,
``src/test/java/com/samsung/openscp/testdata/`` (file per case in the JSON's ``source_file``);
copied into ``tests/gp/vectors/scp11_samsung.json``.  With Samsung's OCE static and ephemeral keys
injected, our host must send the same PERFORM SECURITY OPERATION and MUTUAL AUTHENTICATE APDUs,
accept the card's receipt, and wrap / unwrap the following GET STATUS byte for byte.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import load_der_private_key

from gp.gpcert import flat_tlvs, parse_certificate, split_certificates
from gp.scp11 import HostSession, SCP11Error

VECTORS = json.loads((Path(__file__).parent / "vectors" / "scp11_samsung.json").read_text())
CASES = VECTORS["cases"]


def _h(s: str) -> bytes:
    return bytes.fromhex(s)


def _session(case: dict) -> HostSession:
    (store,) = flat_tlvs(_h(case["sd_certificate_store"]))
    assert store[0] == 0xBF21
    leaf = parse_certificate(split_certificates(store[1])[-1])
    return HostSession(
        case["variant"],
        sd_public_key=leaf.public_key,
        key_version=case["key_version"],
        key_id=case["key_id"],
        oce_private_key=load_der_private_key(_h(case["sk_oce_pkcs8"]), None),
        oce_certificates=[_h(case["oce_certificate"])],
        ephemeral_private_key=load_der_private_key(_h(case["esk_oce_pkcs8"]), None),
        session_key_length=case["session_key_length"],
        oce_key_version=case["oce_key_version"],
        oce_key_id=case["oce_key_id"],
        s16=case["s16"],
    )


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_host_reproduces_the_published_handshake_and_secure_messaging(case: dict) -> None:
    # given the published OCE keys, ephemeral key and SD certificate
    session = _session(case)
    # when the host builds the handshake
    commands = session.authenticate_commands()
    # then every APDU matches the trace
    assert [c.hex().upper() for c in commands] == [c.upper() for c in case["expected_commands"]]
    # and the card's receipt verifies and becomes the MAC chaining value
    session.complete(_h(case["authenticate_response"]))
    assert session.authenticated
    assert session.receipt == _h(case["authenticate_response"])[-18:-2]
    assert session.mac_chaining_value == session.receipt
    # and GET STATUS is wrapped and its answer unwrapped exactly as published
    assert session.wrap(_h(case["get_status_plain"])).hex().upper() == case["get_status_wrapped"].upper()
    assert session.unwrap(_h(case["get_status_response"])) == _h(case["get_status_unwrapped"])


@pytest.mark.parametrize("case", CASES[:1], ids=[CASES[0]["name"]])
def test_a_receipt_off_by_one_bit_is_refused(case: dict) -> None:
    session = _session(case)
    session.authenticate_commands()
    response = bytearray(_h(case["authenticate_response"]))
    response[-3] ^= 0x01
    with pytest.raises(SCP11Error, match="receipt"):
        session.complete(bytes(response))
    assert not session.authenticated


def test_a_refused_authenticate_carries_the_status_word() -> None:
    session = _session(CASES[0])
    session.authenticate_commands()
    with pytest.raises(SCP11Error) as e:
        session.complete(b"\x6a\x80")
    assert e.value.sw == 0x6A80


def test_the_samsung_sd_certificate_of_the_gp_case_is_a_key_agreement_certificate() -> None:
    gp_case = next(c for c in CASES if "7F21" in c["name"])
    (store,) = flat_tlvs(_h(gp_case["sd_certificate_store"]))
    leaf = parse_certificate(split_certificates(store[1])[-1])
    assert leaf.format == "gp" and leaf.key_agreement
    assert leaf.not_after.isoformat() == "2028-12-31"  # Samsung's binary date form, see gp.gpcert
