"""Pages of the certificate authority: the certificates an organisation may see, one certificate
(PEM, fingerprint, chain; a revoke button for the issuing CA), and an OCE certificate request from
a CSR. Adapters only: the services in ``keys.ca`` decide."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.urls import reverse

from keys import ca as ca_services
from keys import selectors_ca as selectors
from keys.models import CertificateKind, RevocationReason
from keys.serializers_ca import pem
from keys.x509_ca import MAX_CSR_BYTES
from portal.errors import DomainError
from portal.views import OrgScopedView
from tenants.access import Action, require
from tenants.models import OrgRole


class CertificateRequestForm(forms.Form):
    csr = forms.CharField(
        label="Certificate signing request (PEM)",
        widget=forms.Textarea(attrs={"rows": 12, "spellcheck": "false", "class": "mono"}),
        max_length=4 * MAX_CSR_BYTES,
        strip=False,
        help_text="A PKCS#10 request for an ECDSA P-256 key, made by your own tooling (e.g. "
        "tessera-provider). Only its key is used: the certificate names your organisation.",
    )


class RevokeForm(forms.Form):
    reason = forms.ChoiceField(choices=RevocationReason.choices)


def _is_ca_officer(view: OrgScopedView) -> bool:
    actor = view.actor
    return (
        actor.on_behalf_of is None
        and actor.can(Action.CERTIFICATES_MANAGE)
        and actor.org.has_role(OrgRole.CONTROLLING_AUTHORITY)
    )


class CertificateListPage(OrgScopedView):
    action = Action.CERTIFICATES_VIEW
    page_size = 50

    def get(self, request: HttpRequest, org: str) -> HttpResponse:
        kind = request.GET.get("kind", "")
        if kind not in CertificateKind.values:
            kind = ""
        qs = selectors.certificate_list(actor=self.actor, kind=kind)
        page = Paginator(qs, self.page_size).get_page(request.GET.get("page"))
        own_cas = [ca for ca in selectors.ca_public_list() if ca.owner_id == self.actor.org.pk]
        return self.render_page(
            "keys/certificates.html",
            {
                "page": page,
                "kind": kind,
                "kinds": CertificateKind.choices,
                "own_cas": own_cas,
                "may_request": ca_services.oce_eligible(self.actor.org)
                and self.actor.can(Action.CERTIFICATES_MANAGE),
                "prev_qs": self.query(kind=kind, page=page.previous_page_number())
                if page.has_previous()
                else "",
                "next_qs": self.query(kind=kind, page=page.next_page_number()) if page.has_next() else "",
            },
        )


class _CertificatePage(OrgScopedView):
    action = Action.CERTIFICATES_VIEW

    def page(self, pk: Any, status: int = 200, **extra: Any) -> HttpResponse:
        cert = selectors.certificate_get(actor=self.actor, pk=pk)
        return self.render_page(
            "keys/certificates_detail.html",
            {
                "cert": cert,
                "pem": pem(cert.der),
                "gp_hex": bytes(cert.gp_der).hex(),
                "chain": [pem(d) for d in ca_services.chain_for(cert)],
                "may_revoke": cert.revoked_at is None
                and _is_ca_officer(self)
                and cert.issuer.owner_id == self.actor.org.pk,
                "revoke_form": RevokeForm(),
                **extra,
            },
            status=status,
        )


class CertificateDetailPage(_CertificatePage):
    def get(self, request: HttpRequest, org: str, pk: Any) -> HttpResponse:
        return self.page(pk)


class CertificateRevokePage(_CertificatePage):
    """POST only: the issuing CA revokes; back to the certificate's page."""

    def post(self, request: HttpRequest, org: str, pk: Any) -> HttpResponse:
        cert = selectors.certificate_get(actor=self.actor, pk=pk)
        require(self.actor, Action.CERTIFICATES_MANAGE)
        form = RevokeForm(request.POST)
        if not form.is_valid():
            return self.page(pk, status=400, error="Choose a revocation reason.")
        try:
            ca_services.certificate_revoke(
                actor=self.actor, certificate=cert, reason=form.cleaned_data["reason"]
            )
        except DomainError as exc:
            if exc.status == 404:
                raise
            return self.page(pk, status=exc.status, error=exc.message)
        return self.redirect_here(
            reverse("org-certificate", kwargs={"org": self.actor.org.slug, "pk": cert.pk})
        )


class CertificateRequestPage(OrgScopedView):
    action = Action.CERTIFICATES_VIEW

    def allowed(self) -> bool:
        actor = self.actor
        return (
            actor.on_behalf_of is None
            and actor.can(Action.CERTIFICATES_MANAGE)
            and ca_services.oce_eligible(actor.org)
        )

    def page(self, form: forms.Form, status: int = 200, **extra: Any) -> HttpResponse:
        return self.render_page(
            "keys/certificates_request.html",
            {"form": form, "allowed": self.allowed(), **extra},
            status=status,
        )

    def get(self, request: HttpRequest, org: str) -> HttpResponse:
        return self.page(CertificateRequestForm())

    def post(self, request: HttpRequest, org: str) -> HttpResponse:
        require(self.actor, Action.CERTIFICATES_MANAGE)
        form = CertificateRequestForm(request.POST)
        if not form.is_valid():
            return self.page(form, status=400)
        try:
            cert = ca_services.oce_request(actor=self.actor, csr_pem=form.cleaned_data["csr"])
        except DomainError as exc:
            if exc.status == 404:
                raise
            return self.page(form, status=exc.status, error=exc.message)
        return self.redirect_here(
            reverse("org-certificate", kwargs={"org": self.actor.org.slug, "pk": cert.pk})
        )
