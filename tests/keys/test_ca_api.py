"""The certificate authority's API and pages: CSR → certificate and chain, bad CSRs as clear 400s,
public roots and CRLs with their content types, revocation, strangers' 404s."""

from __future__ import annotations

import io
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from django.test import Client
from rest_framework.test import APIClient

from keys.models import Certificate
from tests.conftest import client_for
from tests.support.ca import ca_user, casd_certificate_for, make_ca, make_csr

DER = Encoding.DER
BASE = "/api/v1/orgs/provider-sp/certificates/"


def _request(world: Any, csr: Any) -> Any:
    return client_for(world.provider_user).post(BASE + "csr/", {"csr": csr}, format="json")


def test_a_provider_posts_a_csr_and_gets_its_certificate_and_chain(world: Any) -> None:
    # given
    ca = make_ca()
    key, csr = make_csr(common_name="trust-ca")
    # when
    resp = _request(world, csr)
    # then
    assert resp.status_code == 201, resp.content
    body = resp.json()
    leaf = x509.load_pem_x509_certificate(body["pem"].encode())
    root, chain_leaf = (x509.load_pem_x509_certificate(p.encode()) for p in body["chain_pem"])
    assert chain_leaf == leaf and bytes.fromhex(body["der_hex"]) == leaf.public_bytes(DER)
    leaf.verify_directly_issued_by(root)
    assert root.public_bytes(DER) == bytes(ca.root_certificate)
    assert leaf.public_key().public_numbers() == key.public_key().public_numbers()
    assert "CN=provider-sp" in body["subject"] and "trust-ca" not in body["subject"]
    assert (body["kind"], body["status"], body["subject_org"]) == ("oce", "valid", "provider-sp")
    assert body["issuer"]["kloc_id"] == ca.kloc_id
    assert body["fingerprint_sha256"] == Certificate.objects.get(pk=body["id"]).fingerprint
    # and the provider finds it in its list, filtered by kind
    listed = client_for(world.provider_user).get(BASE + "?kind=oce").json()["results"]
    assert [c["id"] for c in listed] == [body["id"]]
    assert client_for(world.provider_user).get(BASE + "?kind=casd").json()["results"] == []
    assert client_for(world.provider_user).get(BASE + "?kind=nope").status_code == 400


def _forged_csr() -> str:
    from cryptography.hazmat.primitives import serialization as ser

    good = x509.load_pem_x509_csr(make_csr()[1].encode())
    other = x509.load_pem_x509_csr(make_csr()[1].encode())
    spki = ser.PublicFormat.SubjectPublicKeyInfo
    der = good.public_bytes(ser.Encoding.DER).replace(
        good.public_key().public_bytes(ser.Encoding.DER, spki),
        other.public_key().public_bytes(ser.Encoding.DER, spki),
    )
    return x509.load_der_x509_csr(der).public_bytes(ser.Encoding.PEM).decode()


@pytest.mark.parametrize(
    "make, code",
    [
        (lambda: "not a csr", "csr_not_pem"),
        (lambda: make_csr()[1].replace("CERTIFICATE REQUEST", "CERTIFICATE"), "csr_not_pem"),
        (lambda: make_csr()[1] + "A" * 10_000, "csr_too_large"),
        (
            lambda: "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n",
            "csr_malformed",
        ),
        (lambda: make_csr(ec.generate_private_key(ec.SECP384R1()))[1], "wrong_curve"),
        (lambda: make_csr(rsa.generate_private_key(public_exponent=65537, key_size=2048))[1], "wrong_curve"),
        (_forged_csr, "csr_bad_signature"),
    ],
    ids=["text", "a-certificate", "oversized", "garbage-der", "p384", "rsa", "forged-signature"],
)
def test_a_bad_csr_is_a_400_with_a_clear_code_and_issues_nothing(world: Any, make: Any, code: str) -> None:
    make_ca()
    resp = _request(world, make())
    assert resp.status_code == 400, resp.content
    assert resp.json()["error"]["code"] == code
    assert not Certificate.objects.exists()


def test_an_se_issuer_may_not_request_an_oce_certificate(world: Any) -> None:
    make_ca()
    resp = client_for(world.owner_user).post(
        "/api/v1/orgs/owner-sei/certificates/csr/", {"csr": make_csr()[1]}, format="json"
    )
    assert resp.status_code == 403
    assert resp.json()["error"]["code"] == "oce_not_eligible"


def test_without_a_ca_a_csr_is_a_409_not_a_500(world: Any) -> None:
    resp = _request(world, make_csr()[1])
    assert resp.status_code == 409
    assert resp.json()["error"]["code"] == "no_certificate_authority"


def test_the_root_and_crl_are_public_to_any_authenticated_caller_with_their_content_types(world: Any) -> None:
    ca = make_ca()
    stranger = client_for(world.stranger_user)
    listing = stranger.get("/api/v1/ca/").json()["results"]
    assert [c["id"] for c in listing] == [str(ca.pk)]
    root = stranger.get(f"/api/v1/ca/{ca.pk}/root/")
    assert root.status_code == 200 and root["Content-Type"] == "application/pkix-cert"
    assert root.content == bytes(ca.root_certificate)
    as_pem = stranger.get(f"/api/v1/ca/{ca.pk}/root/?encoding=pem")
    assert x509.load_pem_x509_certificate(as_pem.content).public_bytes(DER) == bytes(ca.root_certificate)
    crl = stranger.get(f"/api/v1/ca/{ca.pk}/crl/")
    assert crl.status_code == 200 and crl["Content-Type"] == "application/pkix-crl"
    parsed = x509.load_der_x509_crl(crl.content)
    assert parsed.is_signature_valid(x509.load_der_x509_certificate(root.content).public_key())
    # read-only, and asked to authenticate when anonymous
    assert stranger.post(f"/api/v1/ca/{ca.pk}/crl/", {}, format="json").status_code == 405
    assert APIClient().get(f"/api/v1/ca/{ca.pk}/root/").status_code == 401
    assert stranger.get("/api/v1/ca/00000000-0000-0000-0000-000000000000/crl/").status_code == 404


def test_the_ca_revokes_through_the_api_and_the_published_crl_lists_it(world: Any) -> None:
    # given a CASD certificate of the owner's SE
    ca = make_ca()
    cert = casd_certificate_for(world.se)
    ca_client = client_for(ca_user())
    # when the owner (not the CA) tries, and then the CA does
    assert (
        client_for(world.owner_user)
        .post(
            f"/api/v1/orgs/owner-sei/certificates/{cert.pk}/revoke/", {"reason": "superseded"}, format="json"
        )
        .status_code
        == 404
    )
    resp = ca_client.post(
        f"/api/v1/orgs/trust-ca/certificates/{cert.pk}/revoke/", {"reason": "key_compromise"}, format="json"
    )
    # then
    assert resp.status_code == 200, resp.content
    assert resp.json()["status"] == "revoked"
    crl = x509.load_der_x509_crl(client_for(world.stranger_user).get(f"/api/v1/ca/{ca.pk}/crl/").content)
    assert crl.get_revoked_certificate_by_serial_number(int(cert.serial, 16)) is not None
    again = ca_client.post(
        f"/api/v1/orgs/trust-ca/certificates/{cert.pk}/revoke/", {"reason": "superseded"}, format="json"
    )
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "certificate_already_revoked"
    # and the SE has no live CASD certificate any more
    assert (
        client_for(world.owner_user)
        .get(f"/api/v1/orgs/owner-sei/secure-elements/{world.se.pk}/casd-certificate/")
        .status_code
        == 404
    )


def test_the_casd_chain_of_an_se_is_for_those_who_see_the_se(world: Any) -> None:
    cert = casd_certificate_for(world.se)
    url = "/api/v1/orgs/{org}/secure-elements/" + str(world.se.pk) + "/casd-certificate/"
    owner = client_for(world.owner_user).get(url.format(org="owner-sei"))
    assert owner.status_code == 200
    assert owner.json()["id"] == str(cert.pk)
    assert len(owner.json()["chain_pem"]) == 2
    assert client_for(world.provider_user).get(url.format(org="provider-sp")).status_code == 200
    assert client_for(world.stranger_user).get(url.format(org="stranger-sp")).status_code == 404
    on_behalf = client_for(world.collaborator_user).get(
        url.format(org="collab-tsm") + "?on_behalf_of=owner-sei"
    )
    assert on_behalf.status_code == 200
    # a stranger naming the certificate directly: 404, like a certificate that does not exist
    theirs = client_for(world.stranger_user).get(f"/api/v1/orgs/stranger-sp/certificates/{cert.pk}/")
    assert theirs.status_code == 404
    assert theirs.json() == {"error": {"code": "not_found", "message": "No such certificate."}}


# --- pages ------------------------------------------------------------------------------------------


def _browser(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_pages_list_show_request_and_revoke(world: Any) -> None:
    make_ca()
    provider = _browser(world.provider_user)
    # the request form issues and redirects to the certificate
    resp = provider.post("/o/provider-sp/certificates/request/", {"csr": make_csr()[1]})
    assert resp.status_code == 302, resp.content[:300]
    detail = provider.get(resp["Location"])
    assert detail.status_code == 200
    assert b"BEGIN CERTIFICATE" in detail.content and b'id="revoke"' not in detail.content
    # a bad CSR re-renders the form with the reason
    bad = provider.post("/o/provider-sp/certificates/request/", {"csr": "nope"})
    assert bad.status_code == 400 and b"PEM" in bad.content
    # the CA sees it in its list and revokes it from its page
    cert = Certificate.objects.get()
    ca = _browser(ca_user())
    listing = ca.get("/o/trust-ca/certificates/")
    assert listing.status_code == 200 and b"provider-sp" in listing.content and b"CA-KLOC" in listing.content
    page = ca.get(f"/o/trust-ca/certificates/{cert.pk}/")
    assert b'id="revoke"' in page.content
    done = ca.post(f"/o/trust-ca/certificates/{cert.pk}/revoke/", {"reason": "privilege_withdrawn"})
    assert done.status_code == 302
    cert.refresh_from_db()
    assert (cert.status, cert.revocation_reason) == ("revoked", "privilege_withdrawn")
    # a stranger's browser sees nothing
    assert _browser(world.stranger_user).get(f"/o/stranger-sp/certificates/{cert.pk}/").status_code == 404


def test_the_demo_controlling_authority_has_a_root(db: Any) -> None:
    from django.core.management import call_command

    from keys.models import CertificateAuthority

    call_command("seed_demo", stdout=io.StringIO())
    ca = CertificateAuthority.objects.get()
    assert (ca.owner.slug, ca.status) == ("trustroot-ca", "active")
    x509.load_der_x509_certificate(bytes(ca.root_certificate)).verify_directly_issued_by(
        x509.load_der_x509_certificate(bytes(ca.root_certificate))
    )
