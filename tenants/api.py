"""REST API of the tenants app: thin adapters — parse, resolve scoped objects, call one service."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import authenticate
from django.urls import reverse
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.authtoken.models import Token
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from audit.models import AuditEvent
from portal.api import ON_BEHALF_PARAM, ListMixin, NoInput, OrgScopedAPIView
from portal.errors import DomainError, NotFoundError
from tenants import consent as consent_services
from tenants import serializers as s
from tenants import services
from tenants.access import Action, get_visible, memberships_of, visible_to
from tenants.models import Consent, Contract, Invitation, Mandate, Membership, Organisation, OrgStatus


class AuthFailed(DomainError):
    code = "authentication_failed"
    status = 401


class TokenView(APIView):
    """Exchange a username and password for an API token (``Authorization: Token …``)."""

    permission_classes = [AllowAny]
    authentication_classes: list[Any] = []

    @extend_schema(request=s.TokenIn, responses=s.TokenOut, auth=[])
    def post(self, request: Request) -> Response:
        data = s.TokenIn(data=request.data)
        data.is_valid(raise_exception=True)
        user = authenticate(
            request, username=data.validated_data["username"], password=data.validated_data["password"]
        )
        if user is None or not user.is_active:
            raise AuthFailed("Wrong username or password.")
        token, _ = Token.objects.get_or_create(user=user)
        return Response({"token": token.key})


class MyOrganisationsView(ListMixin, APIView):
    """The organisations the caller is a member of, with its role in each."""

    @extend_schema(responses=s.MyOrganisationOut(many=True))
    def get(self, request: Request) -> Response:
        memberships = list(memberships_of(request.user).order_by("org__name"))
        roles = {m.org_id: m.role for m in memberships}
        return self.paginated(request, [m.org for m in memberships], s.MyOrganisationOut, roles=roles)


COLLECTIONS = {
    "members": "api:member-list",
    "invitations": "api:invitation-list",
    "mandates": "api:mandate-list",
    "contracts": "api:contract-list",
    "consents": "api:consent-list",
    "devices": "api:device-list",
    "secure_elements": "api:secure-element-list",
    "security_domains": "api:security-domain-list",
    "audit": "api:audit-list",
}


class OrganisationDetailView(OrgScopedAPIView):
    """One organisation: its facts and links to its collections."""

    @extend_schema(
        parameters=[ON_BEHALF_PARAM],
        responses=inline_serializer(
            "OrganisationDetail",
            {
                "organisation": s.OrganisationOut(),
                "my_role": serializers.CharField(),
                "links": serializers.DictField(),
            },
        ),
    )
    def get(self, request: Request, org: str) -> Response:
        subject = get_visible(Organisation, self.actor, Action.ORG_VIEW, pk=self.actor.subject.pk)
        links = {
            name: request.build_absolute_uri(reverse(route, kwargs={"org": org}))
            for name, route in COLLECTIONS.items()
        }
        return Response(
            {
                "organisation": s.OrganisationOut(subject, context={"request": request}).data,
                "my_role": self.actor.member_role,
                "acting_on_behalf_of": self.actor.on_behalf_of.slug if self.actor.on_behalf_of else None,
                "links": links,
            }
        )


# --- onboarding (platform level) -------------------------------------------------------------


class ApplicationListView(ListMixin, APIView):
    """Apply to join (anyone); list pending applications (platform operators)."""

    def get_permissions(self) -> Any:
        return [AllowAny()] if self.request.method == "POST" else super().get_permissions()

    @extend_schema(responses=s.ApplicationOut(many=True))
    def get(self, request: Request) -> Response:
        services.PlatformActor(request.user)
        return self.paginated(
            request, Organisation.objects.filter(status=OrgStatus.PENDING), s.ApplicationOut
        )

    @extend_schema(request=s.ApplicationIn, responses={201: s.ApplicationOut}, auth=[])
    def post(self, request: Request) -> Response:
        data = s.ApplicationIn(data=request.data)
        data.is_valid(raise_exception=True)
        org = services.organisation_apply(**data.validated_data)
        return Response(s.ApplicationOut(org, context={"request": request}).data, status=201)


def _application(request: Request, pk: Any) -> tuple[services.PlatformActor, Organisation]:
    operator = services.PlatformActor(request.user)
    org = Organisation.objects.filter(pk=pk).first() if _is_uuid(pk) else None
    if org is None:
        raise NotFoundError("No such application.")
    return operator, org


def _is_uuid(value: Any) -> bool:
    import uuid

    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


class ApplicationDetailView(APIView):
    @extend_schema(responses=s.ApplicationOut)
    def get(self, request: Request, pk: str) -> Response:
        _, org = _application(request, pk)
        return Response(s.ApplicationOut(org, context={"request": request}).data)


class ApplicationApproveView(APIView):
    @extend_schema(request=s.DecisionIn, responses=s.ApplicationOut)
    def post(self, request: Request, pk: str) -> Response:
        operator, org = _application(request, pk)
        s.DecisionIn(data=request.data).is_valid(raise_exception=True)
        services.organisation_approve(operator=operator, org=org)
        org.refresh_from_db()
        return Response(s.ApplicationOut(org, context={"request": request}).data)


class ApplicationRejectView(APIView):
    @extend_schema(request=s.DecisionIn, responses=s.ApplicationOut)
    def post(self, request: Request, pk: str) -> Response:
        operator, org = _application(request, pk)
        data = s.DecisionIn(data=request.data)
        data.is_valid(raise_exception=True)
        services.organisation_reject(operator=operator, org=org, reason=data.validated_data["reason"])
        org.refresh_from_db()
        return Response(s.ApplicationOut(org, context={"request": request}).data)


class InvitationAcceptView(APIView):
    """Accept an invitation: as the signed-in user, or creating an account with username/password."""

    permission_classes = [AllowAny]

    @extend_schema(request=s.InvitationAcceptIn, responses={201: s.MembershipOut}, auth=[])
    def post(self, request: Request) -> Response:
        data = s.InvitationAcceptIn(data=request.data)
        data.is_valid(raise_exception=True)
        membership = services.invitation_accept(user=request.user, **data.validated_data)
        ctx = {"request": request, "org": membership.org.slug}
        return Response(s.MembershipOut(membership, context=ctx).data, status=201)


# --- members and invitations -----------------------------------------------------------------


class MemberListView(ListMixin, OrgScopedAPIView):
    @extend_schema(responses=s.MembershipOut(many=True))
    def get(self, request: Request, org: str) -> Response:
        qs = visible_to(Membership, self.actor, Action.MEMBERS_VIEW).select_related("user")
        return self.paginated(request, qs, s.MembershipOut)


class MemberDetailView(OrgScopedAPIView):
    write_action = Action.MEMBERS_MANAGE

    def _get(self, pk: str) -> Membership:
        return get_visible(Membership, self.actor, Action.MEMBERS_VIEW, pk=pk)

    @extend_schema(responses=s.MembershipOut)
    def get(self, request: Request, org: str, pk: str) -> Response:
        return Response(s.MembershipOut(self._get(pk), context={"request": request, "org": org}).data)

    @extend_schema(request=s.MembershipRoleIn, responses=s.MembershipOut)
    def patch(self, request: Request, org: str, pk: str) -> Response:
        membership = self._get(pk)
        data = s.MembershipRoleIn(data=request.data)
        data.is_valid(raise_exception=True)
        membership = services.membership_set_role(
            actor=self.actor, membership=membership, **data.validated_data
        )
        return Response(s.MembershipOut(membership, context={"request": request, "org": org}).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, org: str, pk: str) -> Response:
        services.membership_remove(actor=self.actor, membership=self._get(pk))
        return Response(status=204)


class InvitationListView(ListMixin, OrgScopedAPIView):
    write_action = Action.MEMBERS_MANAGE

    @extend_schema(responses=s.InvitationOut(many=True))
    def get(self, request: Request, org: str) -> Response:
        return self.paginated(
            request, visible_to(Invitation, self.actor, Action.MEMBERS_MANAGE), s.InvitationOut
        )

    @extend_schema(request=s.InvitationIn, responses={201: s.InvitationOut})
    def post(self, request: Request, org: str) -> Response:
        data = s.InvitationIn(data=request.data)
        data.is_valid(raise_exception=True)
        invitation, _token = services.invitation_create(actor=self.actor, **data.validated_data)
        # The token goes only to the invitee's email, never into an API response.
        return Response(
            s.InvitationOut(invitation, context={"request": request, "org": org}).data, status=201
        )


class InvitationDetailView(OrgScopedAPIView):
    @extend_schema(responses=s.InvitationOut)
    def get(self, request: Request, org: str, pk: str) -> Response:
        invitation = get_visible(Invitation, self.actor, Action.MEMBERS_MANAGE, pk=pk)
        return Response(s.InvitationOut(invitation, context={"request": request, "org": org}).data)


class InvitationRevokeView(OrgScopedAPIView):
    write_action = Action.MEMBERS_MANAGE

    @extend_schema(request=None, responses=s.InvitationOut)
    def post(self, request: Request, org: str, pk: str) -> Response:
        NoInput(data=request.data).is_valid(raise_exception=True)
        invitation = get_visible(Invitation, self.actor, Action.MEMBERS_MANAGE, pk=pk)
        services.invitation_revoke(actor=self.actor, invitation=invitation)
        invitation.refresh_from_db()
        return Response(s.InvitationOut(invitation, context={"request": request, "org": org}).data)


# --- mandates --------------------------------------------------------------------------------


class MandateListView(ListMixin, OrgScopedAPIView):
    write_action = Action.MANDATES_MANAGE

    @extend_schema(responses=s.MandateOut(many=True))
    def get(self, request: Request, org: str) -> Response:
        qs = visible_to(Mandate, self.actor, Action.MANDATES_VIEW).select_related("grantor", "grantee")
        return self.paginated(request, qs, s.MandateOut)

    @extend_schema(request=s.MandateIn, responses={201: s.MandateOut})
    def post(self, request: Request, org: str) -> Response:
        data = s.MandateIn(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        grantee = Organisation.objects.filter(slug=fields.pop("grantee"), status=OrgStatus.ACTIVE).first()
        if grantee is None:
            raise NotFoundError("No such grantee organisation.", fields={"grantee": ["not found"]})
        mandate = services.mandate_grant(actor=self.actor, grantee=grantee, **fields)
        return Response(s.MandateOut(mandate, context={"request": request, "org": org}).data, status=201)


class MandateDetailView(OrgScopedAPIView):
    @extend_schema(responses=s.MandateOut)
    def get(self, request: Request, org: str, pk: str) -> Response:
        mandate = get_visible(Mandate, self.actor, Action.MANDATES_VIEW, pk=pk)
        return Response(s.MandateOut(mandate, context={"request": request, "org": org}).data)


class MandateRevokeView(OrgScopedAPIView):
    write_action = Action.MANDATES_MANAGE

    @extend_schema(request=None, responses=s.MandateOut)
    def post(self, request: Request, org: str, pk: str) -> Response:
        NoInput(data=request.data).is_valid(raise_exception=True)
        mandate = get_visible(Mandate, self.actor, Action.MANDATES_MANAGE, pk=pk)
        mandate = services.mandate_revoke(actor=self.actor, mandate=mandate)
        return Response(s.MandateOut(mandate, context={"request": request, "org": org}).data)


# --- contracts and consents ----------------------------------------------------------------


class ContractListView(ListMixin, OrgScopedAPIView):
    @extend_schema(responses=s.ContractOut(many=True))
    def get(self, request: Request, org: str) -> Response:
        qs = visible_to(Contract, self.actor, Action.CONTRACTS_VIEW).select_related(
            "subscriber", "provider", "device"
        )
        return self.paginated(request, qs, s.ContractOut)


class ContractDetailView(OrgScopedAPIView):
    @extend_schema(responses=s.ContractOut)
    def get(self, request: Request, org: str, pk: str) -> Response:
        contract = get_visible(Contract, self.actor, Action.CONTRACTS_VIEW, pk=pk)
        return Response(s.ContractOut(contract, context={"request": request, "org": org}).data)


class ConsentListView(ListMixin, OrgScopedAPIView):
    """Consents given (as a subscriber) and received (as a provider); POST: a provider requests one.

    ``?side=given|received`` and ``?status=pending|granted|denied|revoked|expired`` filter."""

    write_action = Action.CONSENTS_MANAGE

    @extend_schema(responses=s.ConsentOut(many=True))
    def get(self, request: Request, org: str) -> Response:
        qs = visible_to(Consent, self.actor, Action.CONSENTS_VIEW).select_related(
            "subscriber", "grantee", "device"
        )
        side = request.query_params.get("side")
        if side == "given":
            qs = qs.filter(subscriber=self.actor.subject)
        elif side == "received":
            qs = qs.filter(grantee=self.actor.subject)
        status = request.query_params.get("status")
        if status:
            qs = qs.filter(status=status[:16])
        return self.paginated(request, qs, s.ConsentOut)

    @extend_schema(request=s.ConsentIn, responses={201: s.ConsentOut})
    def post(self, request: Request, org: str) -> Response:
        data = s.ConsentIn(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        consent = consent_services.consent_request(
            actor=self.actor,
            device=v["device"],
            purpose=v["purpose"],
            scopes=list(v["scopes"]),
            duration_days=v["duration_days"],
            sd_aid=v["sd_aid"],
            application_aid=v["application_aid"],
        )
        return Response(s.ConsentOut(consent, context={"request": request, "org": org}).data, status=201)


class ConsentDetailView(OrgScopedAPIView):
    @extend_schema(responses=s.ConsentOut)
    def get(self, request: Request, org: str, pk: str) -> Response:
        consent = get_visible(Consent, self.actor, Action.CONSENTS_VIEW, pk=pk)
        return Response(s.ConsentOut(consent, context={"request": request, "org": org}).data)


class _ConsentActionView(OrgScopedAPIView):
    write_action = Action.CONSENTS_MANAGE

    def act(self, consent: Consent) -> Consent:  # pragma: no cover - overridden
        raise NotImplementedError

    @extend_schema(request=None, responses=s.ConsentOut)
    def post(self, request: Request, org: str, pk: str) -> Response:
        NoInput(data=request.data).is_valid(raise_exception=True)
        consent = get_visible(Consent, self.actor, Action.CONSENTS_VIEW, pk=pk)
        consent = self.act(consent)
        return Response(s.ConsentOut(consent, context={"request": request, "org": org}).data)


class ConsentApproveView(_ConsentActionView):
    """The subscriber allows a pending request."""

    def act(self, consent: Consent) -> Consent:
        return consent_services.consent_decide(actor=self.actor, consent=consent, approve=True)


class ConsentDenyView(_ConsentActionView):
    """The subscriber refuses a pending request; the provider's waiting jobs end rejected."""

    def act(self, consent: Consent) -> Consent:
        return consent_services.consent_decide(actor=self.actor, consent=consent, approve=False)


class ConsentRevokeView(_ConsentActionView):
    """The subscriber withdraws a granted consent; the provider's SD is removed."""

    def act(self, consent: Consent) -> Consent:
        return consent_services.consent_revoke(actor=self.actor, consent=consent)


class ConsentHistoryView(OrgScopedAPIView):
    @extend_schema(responses=s.ConsentHistoryOut(many=True))
    def get(self, request: Request, org: str, pk: str) -> Response:
        consent = get_visible(Consent, self.actor, Action.CONSENTS_VIEW, pk=pk)
        events = consent_services.consent_history(consent)
        return Response({"results": s.ConsentHistoryOut(events, many=True).data})


class ConsentReceiptView(OrgScopedAPIView):
    """A signed consent receipt (JSON, Ed25519; see ``tenants.consent``), as a download."""

    @extend_schema(responses=inline_serializer("ConsentReceipt", {"receipt": serializers.DictField()}))
    def get(self, request: Request, org: str, pk: str) -> Response:
        consent = get_visible(Consent, self.actor, Action.CONSENTS_VIEW, pk=pk)
        document = consent_services.consent_receipt(actor=self.actor, consent=consent)
        response = Response(document)
        response["Content-Disposition"] = f'attachment; filename="consent-{consent.pk}.json"'
        return response


class ConsentReceiptKeyView(APIView):
    """The public key that verifies consent receipts (anyone may fetch it); ``?key_id=`` names
    the key of an older receipt."""

    permission_classes = [AllowAny]
    authentication_classes: list[Any] = []

    @extend_schema(
        responses=inline_serializer(
            "ConsentReceiptKey",
            {
                "alg": serializers.CharField(),
                "key_id": serializers.CharField(),
                "public_key": serializers.CharField(),
                "pem": serializers.CharField(),
            },
        ),
        auth=[],
    )
    def get(self, request: Request) -> Response:
        key_id = request.query_params.get("key_id")
        return Response(consent_services.receipt_public_key(key_id[:64] if key_id else None))


# --- audit -----------------------------------------------------------------------------------


def _org_slugs(events: Any) -> dict[Any, str]:
    ids = {e.acting_org_id for e in events} | {e.on_behalf_of_id for e in events}
    return dict(Organisation.objects.filter(pk__in=[i for i in ids if i]).values_list("pk", "slug"))


class AuditListView(ListMixin, OrgScopedAPIView):
    """The audit events that concern the acting organisation (or its mandator, with audit.view)."""

    @extend_schema(parameters=[ON_BEHALF_PARAM], responses=s.AuditEventOut(many=True))
    def get(self, request: Request, org: str) -> Response:
        from rest_framework.pagination import LimitOffsetPagination

        qs = visible_to(AuditEvent, self.actor, Action.AUDIT_VIEW).order_by("-seq")
        tag = request.query_params.get("tag")
        if tag:
            qs = qs.filter(tag=tag[:64])
        paginator = LimitOffsetPagination()
        page = paginator.paginate_queryset(qs, request, view=self) or []
        ctx = {"request": request, "org": org, "org_slugs": _org_slugs(page)}
        return paginator.get_paginated_response(s.AuditEventOut(page, many=True, context=ctx).data)


class AuditDetailView(OrgScopedAPIView):
    @extend_schema(parameters=[ON_BEHALF_PARAM], responses=s.AuditEventOut)
    def get(self, request: Request, org: str, pk: str) -> Response:
        if not str(pk).isdigit():
            raise NotFoundError("No such audit event.")
        event = get_visible(AuditEvent, self.actor, Action.AUDIT_VIEW, pk=int(pk))
        ctx = {"request": request, "org": org, "org_slugs": _org_slugs([event])}
        return Response(s.AuditEventOut(event, context=ctx).data)
