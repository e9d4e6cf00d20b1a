"""The Controlling Authority's certificate authority: issuing, chains, CSR subject override,
revocation in the CRL, access, bad input. Everything is checked with ``cryptography``."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtensionOID, NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit.models import AuditEvent, AuditTag
from keys import ca as ca_services
from keys import selectors_ca
from keys.models import Certificate, CertificateAuthority, CertificateKind
from keys.signing import VaultSigner
from keys.x509_ca import CertificateInputError, csr_parse, public_key_parse
from portal.errors import ForbiddenError, NotFoundError
from tenants.access import Action, get_visible, resolve_actor
from tests import factories as f
from tests.support.ca import ca_actor, ca_user, casd_certificate_for, make_ca, make_csr, p256_point


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


def _org(slug: str, roles: list[str]) -> tuple[Any, Any]:
    org = f.OrganisationFactory(slug=slug, name=slug.title(), roles=roles)
    user = f.MembershipFactory(org=org, user=f.UserFactory(username=f"{slug}-user")).user
    return org, resolve_actor(user, slug)


def test_a_casd_certificate_binds_the_se_to_its_key_and_chains_to_the_root(world: Any) -> None:
    # given an SE's CASD key generated "inside the SE"
    ca = make_ca()
    se_key = ec.generate_private_key(ec.SECP256R1())
    # when the SE's issuer certifies it at import (the CA chosen by lookup: the only active one)
    cert = ca_services.casd_certify(
        actor=resolve_actor(world.owner_user, "owner-sei"),
        secure_element=world.se,
        public_key=p256_point(se_key),
    )
    # then the chain [root, leaf] verifies with cryptography
    root_der, leaf_der = ca_services.chain_for(cert)
    root = x509.load_der_x509_certificate(root_der)
    leaf = x509.load_der_x509_certificate(leaf_der)
    leaf.verify_directly_issued_by(root)
    assert leaf.public_key().public_numbers() == se_key.public_key().public_numbers()
    assert leaf.serial_number == int(cert.serial, 16)
    ku = leaf.extensions.get_extension_for_oid(ExtensionOID.KEY_USAGE).value
    assert ku.key_agreement and not ku.digital_signature and not ku.key_cert_sign
    assert not leaf.extensions.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS).value.ca
    aki = leaf.extensions.get_extension_for_oid(ExtensionOID.AUTHORITY_KEY_IDENTIFIER).value
    assert aki.key_identifier.hex() == ca.kloc_id
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == world.se.serial
    assert (cert.kind, cert.secure_element, cert.issuer) == (CertificateKind.CASD, world.se, ca)
    assert cert.status == "valid"
    assert AuditEvent.objects.filter(tag=AuditTag.CERTIFICATE_ISSUE, target_id=str(cert.pk)).exists()


def test_certifying_the_same_casd_key_again_returns_the_same_certificate(world: Any) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    one = ca_services.casd_certify(
        actor=ca_actor(), secure_element=world.se, public_key=key.public_key(), ca=make_ca()
    )
    two = ca_services.casd_certify(actor=ca_actor(), secure_element=world.se, public_key=p256_point(key))
    assert one.pk == two.pk
    assert Certificate.objects.count() == 1


def test_a_new_casd_key_supersedes_the_old_certificate_and_the_crl_says_so(world: Any) -> None:
    old = casd_certificate_for(world.se)
    new = casd_certificate_for(world.se)
    old.refresh_from_db()
    assert (old.status, old.revocation_reason, new.status) == ("revoked", "superseded", "valid")
    crl = x509.load_der_x509_crl(ca_services.crl_current(make_ca()))
    assert crl.get_revoked_certificate_by_serial_number(int(old.serial, 16)) is not None
    assert crl.get_revoked_certificate_by_serial_number(int(new.serial, 16)) is None


def test_a_stranger_cannot_certify_an_se_it_has_nothing_to_do_with(world: Any) -> None:
    make_ca()
    with pytest.raises(NotFoundError):
        ca_services.casd_certify(
            actor=resolve_actor(world.stranger_user, "stranger-sp"),
            secure_element=world.se,
            public_key=ec.generate_private_key(ec.SECP256R1()).public_key(),
        )
    assert not Certificate.objects.exists()


def test_an_oce_certificate_takes_only_the_key_from_the_csr_and_names_the_requester(world: Any) -> None:
    # given a CSR claiming to be somebody else, with a requested CA extension
    ca = make_ca()
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, "trust-ca"),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Owner SEI"),
                ]
            )
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )
    # when the provider asks for it
    cert = ca_services.oce_request(actor=resolve_actor(world.provider_user, "provider-sp"), csr_pem=csr)
    # then the subject is the provider, whatever the CSR said, and it is no CA
    leaf = x509.load_der_x509_certificate(bytes(cert.der))
    leaf.verify_directly_issued_by(x509.load_der_x509_certificate(bytes(ca.root_certificate)))
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "provider-sp"
    assert leaf.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == world.provider.name
    assert not leaf.extensions.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS).value.ca
    ku = leaf.extensions.get_extension_for_oid(ExtensionOID.KEY_USAGE).value
    assert ku.digital_signature and not ku.key_cert_sign
    assert leaf.public_key().public_numbers() == key.public_key().public_numbers()
    assert (cert.kind, cert.subject_org) == (CertificateKind.OCE, world.provider)


def test_only_tsms_and_providers_get_oce_certificates(world: Any) -> None:
    make_ca()
    with pytest.raises(ForbiddenError) as exc:
        ca_services.oce_request(actor=resolve_actor(world.owner_user, "owner-sei"), csr_pem=make_csr()[1])
    assert exc.value.code == "oce_not_eligible"
    _tsm, actor = _org("a-tsm", ["TSM"])
    assert ca_services.oce_request(actor=actor, csr_pem=make_csr()[1]).kind == "oce"


def test_a_key_certified_for_one_subject_is_refused_for_another(world: Any) -> None:
    make_ca()
    key, csr = make_csr()
    ca_services.oce_request(actor=resolve_actor(world.provider_user, "provider-sp"), csr_pem=csr)
    with pytest.raises(ca_services.CAConflict):
        ca_services.oce_request(
            actor=resolve_actor(world.stranger_user, "stranger-sp"), csr_pem=make_csr(key)[1]
        )


def test_a_revoked_certificate_is_in_the_next_crl_with_its_reason(world: Any) -> None:
    # given
    ca = make_ca()
    cert = ca_services.oce_request(
        actor=resolve_actor(world.provider_user, "provider-sp"), csr_pem=make_csr()[1]
    )
    before = x509.load_der_x509_crl(ca_services.crl_current(ca))
    assert before.get_revoked_certificate_by_serial_number(int(cert.serial, 16)) is None
    # when
    ca_services.certificate_revoke(actor=ca_actor(), certificate=cert, reason="key_compromise")
    # then the published CRL, signed by the CA, lists it with the reason and a higher number
    ca.refresh_from_db()
    crl = x509.load_der_x509_crl(ca_services.crl_current(ca))
    root = x509.load_der_x509_certificate(bytes(ca.root_certificate))
    assert crl.is_signature_valid(root.public_key())
    entry = crl.get_revoked_certificate_by_serial_number(int(cert.serial, 16))
    assert entry is not None
    assert (
        entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        == x509.ReasonFlags.key_compromise
    )
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert number > before.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert crl.next_update_utc - crl.last_update_utc == timedelta(days=7)
    cert.refresh_from_db()
    assert cert.status == "revoked"
    # and revoking again is a conflict, not a second entry
    with pytest.raises(ca_services.CertificateRevoked):
        ca_services.certificate_revoke(actor=ca_actor(), certificate=cert, reason="superseded")


def test_only_the_issuing_ca_revokes(world: Any) -> None:
    cert = casd_certificate_for(world.se)
    with pytest.raises(NotFoundError):
        ca_services.certificate_revoke(
            actor=resolve_actor(world.owner_user, "owner-sei"), certificate=cert, reason="superseded"
        )
    _other, other_ca = _org("other-ca", ["CA"])
    ca_services.ca_create(actor=other_ca, name="Other root")
    with pytest.raises(NotFoundError):
        ca_services.certificate_revoke(actor=other_ca, certificate=cert, reason="superseded")
    cert.refresh_from_db()
    assert cert.revoked_at is None


def test_one_active_ca_per_organisation_and_only_for_ca_organisations(world: Any) -> None:
    make_ca()
    with pytest.raises(ca_services.CAConflict):
        ca_services.ca_create(actor=ca_actor(), name="Second")
    with pytest.raises(ForbiddenError):
        ca_services.ca_create(actor=resolve_actor(world.owner_user, "owner-sei"), name="Mine")
    assert CertificateAuthority.objects.count() == 1


def test_with_two_active_cas_the_configured_one_certifies(world: Any, settings: Any) -> None:
    make_ca()
    _other, other_actor = _org("other-ca", ["CA"])
    other = ca_services.ca_create(actor=other_actor, name="Other root")
    with pytest.raises(ca_services.NoCertificateAuthority):
        ca_services.ca_lookup()
    settings.TESSERA_CA = "other-ca"
    assert ca_services.ca_lookup() == other
    settings.TESSERA_CA = str(other.pk)
    assert ca_services.ca_lookup() == other


def test_the_vault_signer_opens_the_key_only_to_sign_and_refuses_a_foreign_blob(world: Any) -> None:
    ca = make_ca()
    signer = ca_services.ca_signer(ca)
    assert isinstance(signer, VaultSigner)
    assert not any(isinstance(v, ec.EllipticCurvePrivateKey) for v in vars(signer).values())
    sig = signer.sign(b"tbs")
    signer.public_key().verify(sig, b"tbs", ec.ECDSA(hashes.SHA256()))
    # a blob moved to another CA's purpose does not open
    other = VaultSigner(
        org_id=ca.owner_id,
        ca_id=world.owner.pk,
        sealed=bytes(ca.sealed_private_key),
        public_der=bytes(ca.public_key),
    )
    from keys.errors import VaultError

    with pytest.raises(VaultError):
        other.sign(b"tbs")


# --- visibility -----------------------------------------------------------------------------------


def test_who_sees_which_certificate(world: Any) -> None:
    casd = casd_certificate_for(world.se)
    oce = ca_services.oce_request(
        actor=resolve_actor(world.provider_user, "provider-sp"), csr_pem=make_csr()[1]
    )

    def seen(user: Any, slug: str) -> set[Any]:
        return set(
            selectors_ca.certificate_list(actor=resolve_actor(user, slug)).values_list("pk", flat=True)
        )

    assert seen(ca_user(), "trust-ca") == {casd.pk, oce.pk}
    assert seen(world.owner_user, "owner-sei") == {casd.pk}  # the SE's issuer
    assert seen(world.provider_user, "provider-sp") == {casd.pk, oce.pk}  # its own OCE; its SD is on the SE
    assert seen(world.stranger_user, "stranger-sp") == set()
    with pytest.raises(NotFoundError):
        get_visible(
            Certificate,
            resolve_actor(world.stranger_user, "stranger-sp"),
            Action.CERTIFICATES_VIEW,
            pk=oce.pk,
        )


# --- bad input --------------------------------------------------------------------------------------


def test_bad_csrs_are_refused_with_a_clear_code(world: Any) -> None:
    _key, good = make_csr()
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_csr = make_csr(rsa_key)[1]
    p384_csr = make_csr(ec.generate_private_key(ec.SECP384R1()))[1]
    # a CSR whose signature was made by another key: swap the key inside a valid CSR
    other = make_csr()[1]
    good_der = x509.load_pem_x509_csr(good.encode()).public_bytes(serialization.Encoding.DER)
    other_csr = x509.load_pem_x509_csr(other.encode())
    good_spki = (
        x509.load_pem_x509_csr(good.encode())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    other_spki = other_csr.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    forged = (
        x509.load_der_x509_csr(good_der.replace(good_spki, other_spki))
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )
    cases = {
        "csr_not_pem": ["", "hello", 42, None, good.replace("CERTIFICATE REQUEST", "CERTIFICATE")],
        "csr_too_large": [good + "x" * 9000],
        "csr_malformed": [
            good[:60] + "AAAA" + good[64:],
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        ],
        "wrong_curve": [rsa_csr, p384_csr],
        "csr_bad_signature": [forged],
    }
    for code, values in cases.items():
        for value in values:
            with pytest.raises(CertificateInputError) as exc:
                csr_parse(value)
            assert exc.value.code == code, (code, str(value)[:40])
            assert exc.value.status == 400


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.binary(max_size=600), st.text(max_size=600)))
def test_random_csr_input_is_refused_never_crashes(data: Any) -> None:
    for candidate in (
        data,
        b"-----BEGIN CERTIFICATE REQUEST-----\n"
        + (data if isinstance(data, bytes) else data.encode())
        + b"\n-----END CERTIFICATE REQUEST-----\n",
    ):
        with pytest.raises(CertificateInputError):
            csr_parse(candidate)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=120))
def test_random_casd_public_keys_are_refused_never_crash(data: bytes) -> None:
    try:
        key = public_key_parse(data)
    except CertificateInputError:
        return
    assert key.curve.name == "secp256r1"


def test_a_casd_key_on_another_curve_is_refused(world: Any) -> None:
    make_ca()
    with pytest.raises(CertificateInputError) as exc:
        ca_services.casd_certify(
            actor=ca_actor(),
            secure_element=world.se,
            public_key=ec.generate_private_key(ec.SECP384R1()).public_key(),
        )
    assert exc.value.code == "wrong_curve"
    assert not Certificate.objects.exists()


# --- the GlobalPlatform 7F21 form and the PKCS#11 signer -----------------------------------------


def test_casd_and_oce_certificates_also_come_in_7f21_form_that_gp_verifies(world: Any) -> None:
    from gp.gpcert import GPCertificate, verify_chain

    ca = make_ca()
    root_key = x509.load_der_x509_certificate(bytes(ca.root_certificate)).public_key()
    se_key = ec.generate_private_key(ec.SECP256R1())
    casd = casd_certificate_for(world.se, se_key)
    oce_key, csr = make_csr()
    oce = ca_services.oce_request(actor=resolve_actor(world.provider_user, "provider-sp"), csr_pem=csr)
    for cert, key in ((casd, se_key), (oce, oce_key)):
        # both forms chain to the CA key and are for key agreement (an SCP11 leaf)
        for form in (bytes(cert.gp_der), bytes(cert.der)):
            leaf = verify_chain([form], root_key)
            assert leaf.public_key.public_numbers() == key.public_key().public_numbers()
            assert leaf.key_agreement
        gp = GPCertificate.from_bytes(bytes(cert.gp_der))
        assert gp.ca_identifier.hex() == ca.kloc_id
        assert int.from_bytes(gp.serial, "big") == int(cert.serial, 16)
        assert gp.expiry == cert.not_after.date()
    assert GPCertificate.from_bytes(bytes(casd.gp_der)).subject_identifier == bytes.fromhex(world.se.serial)
    assert GPCertificate.from_bytes(bytes(oce.gp_der)).subject_identifier == world.provider.pk.bytes


def test_a_ca_whose_key_lives_in_a_pkcs11_token_issues_through_the_same_code_path(
    world: Any, softhsm: Any, monkeypatch: Any
) -> None:
    import uuid

    from keys import pkcs11 as p11

    # given a non-extractable key pair in the token
    for name, value in softhsm.env().items():
        monkeypatch.setenv(name, value)
    label = f"ca-{uuid.uuid4().hex[:8]}"
    p11.create_signing_key(p11.Pkcs11Config.from_env(softhsm.env()), label)
    _org_row, actor = _org("hsm-ca", ["CA"])
    # when the CA is created on it and certifies an SE
    ca = ca_services.ca_create(actor=actor, name="HSM root", signer_ref=f"pkcs11:{label}")
    cert = ca_services.casd_certify(
        actor=actor,
        secure_element=world.se,
        public_key=ec.generate_private_key(ec.SECP256R1()).public_key(),
        ca=ca,
    )
    # then nothing is sealed, and root, leaf and CRL verify
    assert (ca.signer_ref, bytes(ca.sealed_private_key)) == (f"pkcs11:{label}", b"")
    root = x509.load_der_x509_certificate(bytes(ca.root_certificate))
    root.verify_directly_issued_by(root)
    x509.load_der_x509_certificate(bytes(cert.der)).verify_directly_issued_by(root)
    assert x509.load_der_x509_crl(ca_services.crl_build(ca)).is_signature_valid(root.public_key())
