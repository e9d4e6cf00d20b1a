"""The Controlling Authority's certificate authority: issuing, chains, CSR subject override,
revocation in the CRL, access, bad input. Everything is checked with ``cryptography``."""

from __future__ import annotations

from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID

from audit.models import AuditEvent, AuditTag
from tests.support.ca import make_ca


def test_a_new_ca_has_a_self_signed_p256_root_whose_key_is_only_sealed(world: Any) -> None:
    # when
    ca = make_ca()
    # then the root verifies under its own key and is a CA certificate
    root = x509.load_der_x509_certificate(bytes(ca.root_certificate))
    root.verify_directly_issued_by(root)
    assert isinstance(root.public_key(), ec.EllipticCurvePublicKey)
    assert root.public_key().curve.name == "secp256r1"
    bc = root.extensions.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS)
    assert bc.critical and bc.value.ca
    ku = root.extensions.get_extension_for_oid(ExtensionOID.KEY_USAGE).value
    assert ku.key_cert_sign and ku.crl_sign
    ski = root.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_KEY_IDENTIFIER).value.digest
    assert ski.hex() == ca.kloc_id
    # and the private key is nowhere in the row in clear
    assert ca.signer_ref == "vault"
    assert bytes(ca.sealed_private_key)[:1] == b"\x01"
    assert b"-----BEGIN" not in bytes(ca.sealed_private_key)
    assert AuditEvent.objects.filter(tag=AuditTag.CA_CREATE, target_id=str(ca.pk)).exists()
