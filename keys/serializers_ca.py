"""Input and output of the certificate authority's API. Certificates, roots and CRLs are public
material; nothing here ever touches a private key."""

from __future__ import annotations

import base64
import textwrap
from typing import Any

from rest_framework import serializers

from keys import ca as ca_services
from keys.models import RevocationReason
from keys.x509_ca import MAX_CSR_BYTES
from portal.api import StrictSerializer
from tenants.serializers import abs_url


def pem(der: bytes, label: str = "CERTIFICATE") -> str:
    body = "\n".join(textwrap.wrap(base64.b64encode(bytes(der)).decode(), 64))
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----\n"


class CertificateRequestIn(StrictSerializer):
    # Longer than any CSR we accept, so an oversized one gets the service's clear csr_too_large.
    csr = serializers.CharField(max_length=4 * MAX_CSR_BYTES, trim_whitespace=False)


class CertificateRevokeIn(StrictSerializer):
    reason = serializers.ChoiceField(choices=RevocationReason.choices)


class CertificateOut(serializers.Serializer):
    url = serializers.SerializerMethodField()
    id = serializers.UUIDField()
    kind = serializers.CharField(help_text="casd | oce")
    serial = serializers.CharField()
    subject = serializers.CharField()
    subject_org = serializers.CharField(source="subject_org.slug", default=None)
    secure_element = serializers.UUIDField(source="secure_element_id", allow_null=True)
    ca = serializers.UUIDField(source="issuer_id")
    fingerprint_sha256 = serializers.CharField(source="fingerprint")
    status = serializers.CharField()
    not_before = serializers.DateTimeField()
    not_after = serializers.DateTimeField()
    revoked_at = serializers.DateTimeField(allow_null=True)
    revocation_reason = serializers.CharField()
    created_at = serializers.DateTimeField()

    def get_url(self, obj: Any) -> str:
        return abs_url(self.context, "api:certificate-detail", org=self.context["org"], pk=obj.pk)


class CertificateDetailOut(CertificateOut):
    der_hex = serializers.SerializerMethodField()
    pem = serializers.SerializerMethodField()
    gp_hex = serializers.SerializerMethodField()
    public_key_hex = serializers.SerializerMethodField()
    chain_pem = serializers.SerializerMethodField()
    issuer = serializers.SerializerMethodField()

    def get_der_hex(self, obj: Any) -> str:
        return bytes(obj.der).hex()

    def get_pem(self, obj: Any) -> str:
        return pem(obj.der)

    def get_gp_hex(self, obj: Any) -> str | None:
        return bytes(obj.gp_der).hex() or None

    def get_public_key_hex(self, obj: Any) -> str:
        return bytes(obj.public_key).hex()

    def get_chain_pem(self, obj: Any) -> list[str]:
        return [pem(der) for der in ca_services.chain_for(obj)]

    def get_issuer(self, obj: Any) -> dict[str, Any]:
        return CAOut(obj.issuer, context=self.context).data


class CAOut(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    organisation = serializers.CharField(source="owner.slug")
    status = serializers.CharField()
    kloc_id = serializers.CharField()
    root_sha256 = serializers.SerializerMethodField()
    not_before = serializers.DateTimeField()
    not_after = serializers.DateTimeField()
    root_url = serializers.SerializerMethodField()
    crl_url = serializers.SerializerMethodField()

    def get_root_sha256(self, obj: Any) -> str:
        import hashlib

        return hashlib.sha256(bytes(obj.root_certificate)).hexdigest()

    def get_root_url(self, obj: Any) -> str:
        return abs_url(self.context, "api:ca-root", pk=obj.pk)

    def get_crl_url(self, obj: Any) -> str:
        return abs_url(self.context, "api:ca-crl", pk=obj.pk)
