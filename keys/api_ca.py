"""REST API of the certificate authority (issue 5 item 1).

Organisation-scoped (``/api/v1/orgs/<org>/…``):
- ``GET certificates/?kind=casd|oce`` — certificates the organisation issued (as a CA), holds (as
  an off-card entity) or whose secure element it sees (CASD).
- ``GET certificates/<id>/`` — one, with DER (hex), PEM, the GlobalPlatform ``7F21`` form (hex,
  when emitted), SHA-256 fingerprint, status and the chain ``[root, leaf]`` in PEM.
- ``POST certificates/csr/`` ``{"csr": "<PEM PKCS#10>"}`` — an OCE certificate for the acting
  organisation, 201 with the same detail; a bad CSR is 400 ``csr_not_pem`` | ``csr_too_large`` |
  ``csr_malformed`` | ``csr_bad_signature`` | ``wrong_curve``; an ineligible organisation 403
  ``oce_not_eligible``.
- ``POST certificates/<id>/revoke/`` ``{"reason": …}`` — the issuing CA only.
- ``GET secure-elements/<id>/casd-certificate/`` — the SE's CASD certificate and chain, for
  whoever sees the SE (on a mandator's behalf too).

Public to any authenticated caller (read-only): ``GET ca/`` (JSON), ``GET ca/<id>/root/``
(``application/pkix-cert``, or PEM with ``?encoding=pem``), ``GET ca/<id>/crl/``
(``application/pkix-crl``, republished when less than a day is left).
"""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from devices.models import SecureElement
from keys import ca as ca_services
from keys import selectors_ca as selectors
from keys import serializers_ca as s
from keys.models import CertificateKind
from portal.api import ON_BEHALF_PARAM, ListMixin, OrgScopedAPIView
from portal.errors import InvalidError
from tenants.access import Action, get_visible

KIND_PARAM = OpenApiParameter("kind", str, enum=list(CertificateKind.values), required=False)


class CertificateListView(ListMixin, OrgScopedAPIView):
    action = Action.CERTIFICATES_VIEW

    @extend_schema(parameters=[KIND_PARAM], responses=s.CertificateOut(many=True))
    def get(self, request: Request, org: str) -> Response:
        kind = request.query_params.get("kind", "")
        if kind and kind not in CertificateKind.values:
            raise InvalidError(
                "kind must be 'casd' or 'oce'.", code="invalid_kind", fields={"kind": ["Invalid."]}
            )
        return self.paginated(
            request, selectors.certificate_list(actor=self.actor, kind=kind), s.CertificateOut
        )


class CertificateDetailView(OrgScopedAPIView):
    action = Action.CERTIFICATES_VIEW

    @extend_schema(responses=s.CertificateDetailOut)
    def get(self, request: Request, org: str, pk: str) -> Response:
        cert = selectors.certificate_get(actor=self.actor, pk=pk)
        return Response(s.CertificateDetailOut(cert, context=self.context(request)).data)


class CertificateRequestView(OrgScopedAPIView):
    action = Action.CERTIFICATES_VIEW
    write_action = Action.CERTIFICATES_MANAGE

    @extend_schema(request=s.CertificateRequestIn, responses={201: s.CertificateDetailOut})
    def post(self, request: Request, org: str) -> Response:
        ser = s.CertificateRequestIn(data=request.data)
        ser.is_valid(raise_exception=True)
        cert = ca_services.oce_request(actor=self.actor, csr_pem=ser.validated_data["csr"])
        return Response(
            s.CertificateDetailOut(cert, context=self.context(request)).data, status=status.HTTP_201_CREATED
        )


class CertificateRevokeView(OrgScopedAPIView):
    action = Action.CERTIFICATES_VIEW
    write_action = Action.CERTIFICATES_MANAGE

    @extend_schema(request=s.CertificateRevokeIn, responses=s.CertificateDetailOut)
    def post(self, request: Request, org: str, pk: str) -> Response:
        cert = selectors.certificate_get(actor=self.actor, pk=pk)
        ser = s.CertificateRevokeIn(data=request.data)
        ser.is_valid(raise_exception=True)
        cert = ca_services.certificate_revoke(
            actor=self.actor, certificate=cert, reason=ser.validated_data["reason"]
        )
        return Response(s.CertificateDetailOut(cert, context=self.context(request)).data)


class SecureElementCasdCertificateView(OrgScopedAPIView):
    action = Action.DEVICES_VIEW

    @extend_schema(parameters=[ON_BEHALF_PARAM], responses=s.CertificateDetailOut)
    def get(self, request: Request, org: str, pk: str) -> Response:
        se = get_visible(SecureElement, self.actor, Action.DEVICES_VIEW, pk=pk)
        cert = selectors.casd_certificate_for_se(actor=self.actor, secure_element=se)
        return Response(s.CertificateDetailOut(cert, context=self.context(request)).data)


# --- public: CA roots and CRLs ------------------------------------------------------------------


class CAListView(ListMixin, APIView):
    @extend_schema(responses=s.CAOut(many=True))
    def get(self, request: Request) -> Response:
        return self.paginated(request, selectors.ca_public_list(), s.CAOut)


class CARootView(APIView):
    @extend_schema(responses={(200, "application/pkix-cert"): bytes})
    def get(self, request: Request, pk: str) -> HttpResponse:
        ca = selectors.ca_public_get(pk)
        if request.query_params.get("encoding") == "pem":
            return HttpResponse(s.pem(ca.root_certificate), content_type="application/x-pem-file")
        resp = HttpResponse(bytes(ca.root_certificate), content_type="application/pkix-cert")
        resp["Content-Disposition"] = f'attachment; filename="ca-{ca.kloc_id[:16]}.cer"'
        return resp


class CACrlView(APIView):
    @extend_schema(responses={(200, "application/pkix-crl"): bytes})
    def get(self, request: Request, pk: str) -> HttpResponse:
        ca = selectors.ca_public_get(pk)
        resp = HttpResponse(ca_services.crl_current(ca), content_type="application/pkix-crl")
        resp["Content-Disposition"] = f'attachment; filename="ca-{ca.kloc_id[:16]}.crl"'
        return resp
