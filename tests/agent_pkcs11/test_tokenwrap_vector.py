"""The worked example of docs/tee-bridge.md §3, byte for byte (no token needed)."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec

from gp import tokenwrap

DEVICE = ec.derive_private_key(int("11" * 32, 16), ec.SECP256R1())
EPHEMERAL = ec.derive_private_key(int("22" * 32, 16), ec.SECP256R1())
LABEL = "tessera/sd/A000000151535001/72"


def test_the_documented_envelope_is_reproduced_and_received():
    envelope = tokenwrap.wrap_for_token(bytes(range(32)), DEVICE.public_key(), LABEL, ephemeral_key=EPHEMERAL)
    q = tokenwrap.point_bytes(DEVICE.public_key())
    assert tokenwrap.kek_input(envelope.ephemeral, q, LABEL).hex().upper() == (
        "D5CD8B42D4F95539204F1D7E205E42A853BA8008AF90A2D0300A68190624CA5D"
    )
    assert (
        envelope.wrapped.hex().upper() == "4905811CD2B228B1A3D462D4BC6E556AD0606FDB95985919A68639A945B92A09"
    )
    assert envelope.tag.hex().upper() == "5EBD5571A305006713C32BAA83D5AC37"
    assert tokenwrap.receive_in_software(DEVICE, envelope) == bytes(range(32))


def test_master_key_labels_name_the_sd_and_key_version():
    assert tokenwrap.master_key_label("a000000151535001", 0x72) == "tessera/sd/A000000151535001/72"
    for bad in (("A0", 1), ("A000000151535001", 0x80)):
        try:
            tokenwrap.master_key_label(*bad)
        except tokenwrap.EnvelopeError:
            continue
        raise AssertionError(f"{bad} accepted")
