"""Pages of the tenants app: members and invitations, mandates, onboarding, invitation links.

Adapters only: parse the form, resolve scoped objects through the access module, call one
service, then redirect (or, for htmx, return the changed row). A service's domain error is shown on
the page with the status it carries (400, 409, 410), never as a 500.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views import View

from portal.errors import DomainError
from portal.views import OrgScopedView, error_page, is_htmx
from tenants import consent as consent_services
from tenants import forms, selectors, services
from tenants.access import Action, get_visible, visible_to
from tenants.errors import InvitationInvalid
from tenants.models import Consent, ConsentStatus, Invitation, Mandate, MemberRole, Membership

# --- members and invitations -------------------------------------------------------------------


class MembersView(OrgScopedView):
    """``/o/<org>/members/``: everyone sees the list; owners and admins invite, change and remove."""

    action = Action.MEMBERS_VIEW

    def page(
        self,
        *,
        invite_form: forms.InvitationForm | None = None,
        error: str = "",
        status: int = 200,
    ) -> HttpResponse:
        actor = self.actor
        manage = actor.can(Action.MEMBERS_MANAGE)
        members = (
            visible_to(Membership, actor, Action.MEMBERS_VIEW)
            .select_related("user")
            .order_by("user__username")
        )
        invitations = (
            visible_to(Invitation, actor, Action.MEMBERS_MANAGE).filter(
                accepted_at__isnull=True, revoked_at__isnull=True
            )
            if manage
            else []
        )
        return self.render_page(
            "tenants/members.html",
            {
                "members": members,
                "invitations": [i for i in invitations if i.state == "open"],
                "manage": manage,
                "invite_form": invite_form or forms.InvitationForm(),
                "roles": MemberRole.choices,
                "error": error,
            },
            status=status,
        )

    def get(self, request: HttpRequest, org: str) -> HttpResponse:
        return self.page()

    def post(self, request: HttpRequest, org: str) -> HttpResponse:
        """Invite someone."""
        form = forms.InvitationForm(request.POST)
        if not form.is_valid():
            return self.page(invite_form=form, error="Check the invitation form.", status=400)
        try:
            invitation, _token = services.invitation_create(actor=self.actor, **form.cleaned_data)
        except DomainError as exc:
            forms.apply_domain_error(form, exc.fields, exc.message)
            return self.page(invite_form=form, error=exc.message, status=exc.status)
        # The link goes only to the invitee's mailbox; the page never shows the token.
        messages.success(
            request, f"Invitation sent to {invitation.email} as {invitation.get_role_display()}."
        )
        return redirect("org-members", org=org)


class MemberRoleView(MembersView):
    action = Action.MEMBERS_MANAGE

    def get(self, request: HttpRequest, org: str, pk: Any = None) -> HttpResponse:
        return redirect("org-members", org=org)

    def post(self, request: HttpRequest, org: str, pk: Any = None) -> HttpResponse:
        membership = get_visible(Membership, self.actor, Action.MEMBERS_MANAGE, pk=pk)
        form = forms.MemberRoleForm(request.POST)
        if not form.is_valid():
            return self.page(error="Choose one of the listed roles.", status=400)
        try:
            services.membership_set_role(
                actor=self.actor, membership=membership, role=form.cleaned_data["role"]
            )
        except DomainError as exc:
            return self.page(error=exc.message, status=exc.status)
        messages.success(request, f"{membership.user.username} is now {membership.get_role_display()}.")
        return redirect("org-members", org=org)


class MemberRemoveView(MembersView):
    action = Action.MEMBERS_MANAGE

    def get(self, request: HttpRequest, org: str, pk: Any = None) -> HttpResponse:
        return redirect("org-members", org=org)

    def post(self, request: HttpRequest, org: str, pk: Any = None) -> HttpResponse:
        membership = get_visible(Membership, self.actor, Action.MEMBERS_MANAGE, pk=pk)
        username = membership.user.username
        try:
            services.membership_remove(actor=self.actor, membership=membership)
        except DomainError as exc:
            return self.page(error=exc.message, status=exc.status)
        if is_htmx(request):
            return HttpResponse("")
        messages.success(request, f"{username} was removed from {self.actor.org.name}.")
        return redirect("org-members", org=org)


class InvitationRevokeView(MembersView):
    action = Action.MEMBERS_MANAGE

    def get(self, request: HttpRequest, org: str, pk: Any = None) -> HttpResponse:
        return redirect("org-members", org=org)

    def post(self, request: HttpRequest, org: str, pk: Any = None) -> HttpResponse:
        invitation = get_visible(Invitation, self.actor, Action.MEMBERS_MANAGE, pk=pk)
        try:
            services.invitation_revoke(actor=self.actor, invitation=invitation)
        except DomainError as exc:
            if is_htmx(request):
                return self.render_page(
                    "tenants/_invitation_row.html", {"inv": invitation, "row_error": exc.message}, exc.status
                )
            return self.page(error=exc.message, status=exc.status)
        if is_htmx(request):
            return HttpResponse("")
        messages.success(request, f"The invitation of {invitation.email} was revoked.")
        return redirect("org-members", org=org)


# --- mandates ----------------------------------------------------------------------------------


class MandatesView(OrgScopedView):
    """``/o/<org>/mandates/``: mandates given and received; owners and admins grant and revoke."""

    action = Action.MANDATES_VIEW

    def page(
        self, *, form: forms.MandateGrantForm | None = None, error: str = "", status: int = 200
    ) -> HttpResponse:
        actor = self.actor
        mandates = visible_to(Mandate, actor, Action.MANDATES_VIEW).select_related("grantor", "grantee")
        return self.render_page(
            "tenants/mandates.html",
            {
                "given": mandates.filter(grantor=actor.subject).order_by("-created_at"),
                "received": mandates.filter(grantee=actor.subject).order_by("-created_at"),
                "manage": actor.can(Action.MANDATES_MANAGE),
                "form": form or forms.MandateGrantForm(),
                "error": error,
            },
            status=status,
        )

    def get(self, request: HttpRequest, org: str) -> HttpResponse:
        return self.page()

    def post(self, request: HttpRequest, org: str) -> HttpResponse:
        """Grant a mandate."""
        form = forms.MandateGrantForm(request.POST)
        if not form.is_valid():
            return self.page(form=form, error="Check the mandate form.", status=400)
        try:
            mandate = services.mandate_grant(
                actor=self.actor,
                grantee=form.cleaned_data["grantee"],
                actions=list(form.cleaned_data["actions"]),
                scope=form.scope(),
                valid_until=form.cleaned_data.get("valid_until"),
            )
        except DomainError as exc:
            forms.apply_domain_error(form, exc.fields, exc.message)
            return self.page(form=form, error=exc.message, status=exc.status)
        messages.success(request, f"Mandate granted to {mandate.grantee.name}.")
        return redirect("org-mandates", org=org)


class MandateRevokeView(MandatesView):
    action = Action.MANDATES_MANAGE

    def get(self, request: HttpRequest, org: str, pk: Any = None) -> HttpResponse:
        return redirect("org-mandates", org=org)

    def post(self, request: HttpRequest, org: str, pk: Any = None) -> HttpResponse:
        mandate = get_visible(Mandate, self.actor, Action.MANDATES_MANAGE, pk=pk)
        side = "given" if mandate.grantor_id == self.actor.org.pk else "received"
        try:
            mandate = services.mandate_revoke(actor=self.actor, mandate=mandate)
        except DomainError as exc:
            if is_htmx(request):
                return self.render_page(
                    "tenants/_mandate_row.html",
                    {"m": mandate, "side": side, "manage": True, "row_error": exc.message},
                    exc.status,
                )
            return self.page(error=exc.message, status=exc.status)
        if is_htmx(request):
            return self.render_page("tenants/_mandate_row.html", {"m": mandate, "side": side, "manage": True})
        messages.success(request, "Mandate revoked.")
        return redirect("org-mandates", org=org)


# --- onboarding (platform level) ---------------------------------------------------------------


class ApplyView(View):
    """``/apply/``: anyone may ask for their organisation to join."""

    def get(self, request: HttpRequest) -> HttpResponse:
        return render(request, "tenants/apply.html", {"form": forms.ApplicationForm()})

    def post(self, request: HttpRequest) -> HttpResponse:
        form = forms.ApplicationForm(request.POST)
        if not form.is_valid():
            return render(request, "tenants/apply.html", {"form": form}, status=400)
        data = form.cleaned_data
        try:
            org = services.organisation_apply(
                name=data["name"],
                slug=data["slug"],
                roles=list(data["roles"]),
                contact_name=data["contact_name"],
                contact_email=data["contact_email"],
                note=data["note"],
            )
        except DomainError as exc:
            forms.apply_domain_error(form, exc.fields, exc.message)
            return render(request, "tenants/apply.html", {"form": form}, status=exc.status)
        return render(request, "tenants/apply_done.html", {"applicant": org}, status=201)


class OperatorView(View):
    """Platform-operator pages: staff only; anyone else is told the page does not exist."""

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not request.user.is_staff:
            raise Http404("Not found.")
        self.operator = services.PlatformActor(request.user)
        return super().dispatch(request, *args, **kwargs)

    def page(self, *, error: str = "", status: int = 200) -> HttpResponse:
        return render(
            self.request,
            "tenants/applications.html",
            {
                "applications": selectors.applications_pending(),
                "error": error,
                "reject_form": forms.RejectForm(),
            },
            status=status,
        )


class ApplicationsView(OperatorView):
    def get(self, request: HttpRequest) -> HttpResponse:
        return self.page()


class ApplicationDecideView(OperatorView):
    decision = "approve"

    def get(self, request: HttpRequest, pk: Any = None) -> HttpResponse:
        return redirect("operator-applications")

    def post(self, request: HttpRequest, pk: Any = None) -> HttpResponse:
        org = selectors.application_get(pk=pk)
        if org is None:
            raise Http404("No such application.")
        try:
            if self.decision == "approve":
                services.organisation_approve(operator=self.operator, org=org)
                note = f"{org.name} approved; {org.contact_email} was invited as owner."
            else:
                form = forms.RejectForm(request.POST)
                if not form.is_valid():
                    return self.page(error="The reason is at most 500 characters.", status=400)
                services.organisation_reject(
                    operator=self.operator, org=org, reason=form.cleaned_data["reason"]
                )
                note = f"{org.name} rejected."
        except DomainError as exc:
            return self.page(error=exc.message, status=exc.status)
        messages.success(request, note)
        return redirect("operator-applications")


# --- invitation links --------------------------------------------------------------------------


class InvitationAcceptView(View):
    """``/invitations/<token>/``: join as the signed-in user, or create an account and join.

    Unknown, expired, revoked and used links all answer the same 410 page.
    """

    def _gone(self, request: HttpRequest, exc: DomainError) -> HttpResponse:
        return render(request, "tenants/invitation_gone.html", {"message": exc.message}, status=410)

    def _page(self, request: HttpRequest, invitation: Invitation, **ctx: Any) -> HttpResponse:
        status = ctx.pop("status", 200)
        return render(
            request,
            "tenants/invitation.html",
            {"invitation": invitation, "form": ctx.pop("form", None) or forms.AccountForm(), **ctx},
            status=status,
        )

    def get(self, request: HttpRequest, token: str) -> HttpResponse:
        try:
            invitation = services.invitation_lookup(token=token)
        except InvitationInvalid as exc:
            return self._gone(request, exc)
        return self._page(request, invitation)

    def post(self, request: HttpRequest, token: str) -> HttpResponse:
        try:
            invitation = services.invitation_lookup(token=token)
        except InvitationInvalid as exc:
            return self._gone(request, exc)
        form = forms.AccountForm(request.POST)
        if request.user.is_authenticated:
            kwargs: dict[str, Any] = {"user": request.user}
        else:
            if not form.is_valid():
                return self._page(request, invitation, form=form, status=400)
            kwargs = {"username": form.cleaned_data["username"], "password": form.cleaned_data["password"]}
        try:
            membership = services.invitation_accept(token=token, **kwargs)
        except InvitationInvalid as exc:
            return self._gone(request, exc)
        except DomainError as exc:
            if not request.user.is_authenticated and form.is_bound:
                forms.apply_domain_error(form, exc.fields, exc.message)
            return self._page(request, invitation, form=form, error=exc.message, status=exc.status)
        if not request.user.is_authenticated:
            login(request, membership.user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, f"Welcome to {membership.org.name}.")
        return redirect(reverse("org-dashboard", kwargs={"org": membership.org.slug}))


__all__ = [
    "ApplicationDecideView",
    "ApplicationsView",
    "ApplyView",
    "InvitationAcceptView",
    "InvitationRevokeView",
    "MandateRevokeView",
    "MandatesView",
    "MemberRemoveView",
    "MemberRoleView",
    "MembersView",
    "error_page",
]


# --- consents (issue 6): pages for a non-technical person on a phone -------------------------


class ConsentsView(OrgScopedView):
    """``/o/<org>/consents/``: requests waiting for the subscriber's answer, its answers, and (for
    a provider) the consents it asked for."""

    action = Action.CONSENTS_VIEW

    def get(self, request: HttpRequest, org: str) -> HttpResponse:
        consents = visible_to(Consent, self.actor, Action.CONSENTS_VIEW).select_related(
            "subscriber", "grantee", "device"
        )
        subject = self.actor.subject
        given = consents.filter(subscriber=subject)
        return self.render_page(
            "tenants/consents.html",
            {
                "waiting": given.filter(status=ConsentStatus.PENDING),
                "given": given.exclude(status=ConsentStatus.PENDING),
                "received": consents.filter(grantee=subject),
            },
        )


class ConsentView(OrgScopedView):
    """``/o/<org>/consents/<pk>/``: one request or consent in plain language, one decision."""

    action = Action.CONSENTS_VIEW

    def page(self, consent: Consent, *, error: str = "", status: int = 200) -> HttpResponse:
        from jobs.models import Job

        removal = []
        if consent.removal_job_id and self.actor.can(Action.JOBS_VIEW):
            removal = list(visible_to(Job, self.actor, Action.JOBS_VIEW).filter(pk=consent.removal_job_id))
        return self.render_page(
            "tenants/consent.html",
            {
                "consent": consent,
                "plain": consent_services.consent_plain(consent),
                "is_subscriber": consent.subscriber_id == self.actor.subject.pk,
                "history": consent_services.consent_history(consent),
                "removal_jobs": removal,
                "error": error,
            },
            status=status,
        )

    def consent(self, pk: Any) -> Consent:
        return get_visible(Consent, self.actor, Action.CONSENTS_VIEW, pk=pk)

    def get(self, request: HttpRequest, org: str, pk: Any = None) -> HttpResponse:
        return self.page(self.consent(pk))


class _ConsentDecisionView(ConsentView):
    action = Action.CONSENTS_MANAGE
    done = ""

    def act(self, consent: Consent) -> Consent:  # pragma: no cover - overridden
        raise NotImplementedError

    def get(self, request: HttpRequest, org: str, pk: Any = None) -> HttpResponse:
        return redirect("org-consent", org=org, pk=pk)

    def post(self, request: HttpRequest, org: str, pk: Any = None) -> HttpResponse:
        consent = self.consent(pk)
        try:
            self.act(consent)
        except DomainError as exc:
            consent.refresh_from_db()
            return self.page(consent, error=exc.message, status=exc.status)
        messages.success(request, self.done)
        return redirect("org-consent", org=org, pk=pk)


class ConsentApproveView(_ConsentDecisionView):
    done = "You allowed it. You can withdraw your consent at any time."

    def act(self, consent: Consent) -> Consent:
        return consent_services.consent_decide(actor=self.actor, consent=consent, approve=True)


class ConsentDenyView(_ConsentDecisionView):
    done = "You refused. Nothing will be put on your device."

    def act(self, consent: Consent) -> Consent:
        return consent_services.consent_decide(actor=self.actor, consent=consent, approve=False)


class ConsentRevokeView(_ConsentDecisionView):
    done = "You withdrew your consent. Its area and keys are being removed from your device."

    def act(self, consent: Consent) -> Consent:
        return consent_services.consent_revoke(actor=self.actor, consent=consent)


class ConsentReceiptView(ConsentView):
    """The signed receipt as a JSON download (same document as the API's)."""

    def get(self, request: HttpRequest, org: str, pk: Any = None) -> HttpResponse:
        import json

        consent = self.consent(pk)
        document = consent_services.consent_receipt(actor=self.actor, consent=consent)
        response = HttpResponse(json.dumps(document, indent=2), content_type="application/json")
        response["Content-Disposition"] = f'attachment; filename="consent-{consent.pk}.json"'
        return response
