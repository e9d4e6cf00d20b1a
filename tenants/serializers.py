"""Input and output serializers per endpoint. Output serializers carry each item's own ``url``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.urls import reverse
from rest_framework import serializers

from portal.api import StrictSerializer
from tenants.models import MandateAction, MemberRole, OrgRole


def abs_url(context: Mapping[str, Any], name: str, **kwargs: Any) -> str:
    path = reverse(name, kwargs=kwargs)
    request = context.get("request")
    return request.build_absolute_uri(path) if request is not None else path


def org_slug(context: Mapping[str, Any]) -> str:
    return context["org"]


class OrganisationOut(serializers.Serializer):
    url = serializers.SerializerMethodField()
    id = serializers.UUIDField()
    slug = serializers.CharField()
    name = serializers.CharField()
    status = serializers.CharField()
    roles = serializers.ListField(child=serializers.CharField())

    def get_url(self, obj: Any) -> str:
        return abs_url(self.context, "api:org-detail", org=obj.slug)


class MyOrganisationOut(OrganisationOut):
    my_role = serializers.SerializerMethodField()

    def get_my_role(self, obj: Any) -> str:
        return self.context["roles"].get(obj.pk, "")


class ApplicationIn(StrictSerializer):
    name = serializers.CharField(max_length=120)
    slug = serializers.CharField(max_length=50)
    roles = serializers.ListField(
        child=serializers.ChoiceField(choices=OrgRole.choices), min_length=1, max_length=10
    )
    contact_name = serializers.CharField(max_length=120)
    contact_email = serializers.EmailField(max_length=254)
    note = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")


class ApplicationOut(serializers.Serializer):
    url = serializers.SerializerMethodField()
    id = serializers.UUIDField()
    slug = serializers.CharField()
    name = serializers.CharField()
    status = serializers.CharField()
    roles = serializers.ListField(child=serializers.CharField())
    contact_name = serializers.CharField()
    contact_email = serializers.EmailField()
    created_at = serializers.DateTimeField()

    def get_url(self, obj: Any) -> str:
        return abs_url(self.context, "api:application-detail", pk=obj.pk)


class DecisionIn(StrictSerializer):
    reason = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


class MembershipOut(serializers.Serializer):
    url = serializers.SerializerMethodField()
    id = serializers.UUIDField()
    username = serializers.CharField(source="user.username")
    email = serializers.EmailField(source="user.email")
    role = serializers.CharField()
    created_at = serializers.DateTimeField()

    def get_url(self, obj: Any) -> str:
        return abs_url(self.context, "api:member-detail", org=org_slug(self.context), pk=obj.pk)


class MembershipRoleIn(StrictSerializer):
    role = serializers.ChoiceField(choices=MemberRole.choices)


class InvitationIn(StrictSerializer):
    email = serializers.EmailField(max_length=254)
    role = serializers.ChoiceField(choices=MemberRole.choices)


class InvitationOut(serializers.Serializer):
    url = serializers.SerializerMethodField()
    id = serializers.UUIDField()
    email = serializers.EmailField()
    role = serializers.CharField()
    state = serializers.CharField()
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()

    def get_url(self, obj: Any) -> str:
        return abs_url(self.context, "api:invitation-detail", org=org_slug(self.context), pk=obj.pk)


class InvitationAcceptIn(StrictSerializer):
    token = serializers.CharField(max_length=200)
    username = serializers.CharField(max_length=150, required=False, allow_blank=True, default="")
    password = serializers.CharField(
        max_length=200, required=False, allow_blank=True, default="", write_only=True
    )
    email = serializers.EmailField(max_length=254, required=False, allow_blank=True, default="")


class MandateIn(StrictSerializer):
    grantee = serializers.SlugField(max_length=50)
    actions = serializers.ListField(
        child=serializers.ChoiceField(choices=MandateAction.choices), min_length=1, max_length=20
    )
    scope = serializers.DictField(required=False, default=dict)
    valid_from = serializers.DateTimeField(required=False, allow_null=True, default=None)
    valid_until = serializers.DateTimeField(required=False, allow_null=True, default=None)


class MandateOut(serializers.Serializer):
    url = serializers.SerializerMethodField()
    id = serializers.UUIDField()
    grantor = serializers.CharField(source="grantor.slug")
    grantee = serializers.CharField(source="grantee.slug")
    actions = serializers.ListField(child=serializers.CharField())
    scope = serializers.DictField()
    valid_from = serializers.DateTimeField()
    valid_until = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)
    state = serializers.CharField()

    def get_url(self, obj: Any) -> str:
        return abs_url(self.context, "api:mandate-detail", org=org_slug(self.context), pk=obj.pk)


class ContractOut(serializers.Serializer):
    url = serializers.SerializerMethodField()
    id = serializers.UUIDField()
    subscriber = serializers.CharField(source="subscriber.slug")
    provider = serializers.CharField(source="provider.slug")
    device = serializers.CharField(source="device.serial")
    service = serializers.CharField()
    switch_allowed = serializers.BooleanField()
    notice_days = serializers.IntegerField()
    connectivity_payer = serializers.CharField(source="connectivity_payer.slug", allow_null=True, default=None)
    consent_required = serializers.BooleanField()
    sd_aid = serializers.CharField()
    status = serializers.CharField()
    end_reason = serializers.CharField()
    starts_at = serializers.DateTimeField()
    ends_at = serializers.DateTimeField(allow_null=True)

    def get_url(self, obj: Any) -> str:
        return abs_url(self.context, "api:contract-detail", org=org_slug(self.context), pk=obj.pk)


class ConsentOut(serializers.Serializer):
    url = serializers.SerializerMethodField()
    id = serializers.UUIDField()
    subscriber = serializers.CharField(source="subscriber.slug")
    grantee = serializers.CharField(source="grantee.slug")
    device = serializers.CharField(source="device.serial")
    purpose = serializers.CharField()
    scopes = serializers.ListField(child=serializers.CharField())
    status = serializers.CharField()
    sd_aid = serializers.CharField()
    application_aid = serializers.CharField()
    duration_days = serializers.IntegerField(allow_null=True)
    requested_at = serializers.DateTimeField()
    decided_at = serializers.DateTimeField(allow_null=True)
    granted_at = serializers.DateTimeField(allow_null=True)
    expires_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)
    removal_job = serializers.UUIDField(source="removal_job_id", allow_null=True)
    plain = serializers.SerializerMethodField()

    def get_url(self, obj: Any) -> str:
        return abs_url(self.context, "api:consent-detail", org=org_slug(self.context), pk=obj.pk)

    def get_plain(self, obj: Any) -> dict[str, Any]:
        from tenants.consent import consent_plain

        return consent_plain(obj)


class ConsentIn(StrictSerializer):
    device = serializers.CharField(max_length=64)
    purpose = serializers.CharField(max_length=200)
    scopes = serializers.ListField(child=serializers.CharField(max_length=40), min_length=1, max_length=20)
    duration_days = serializers.IntegerField(
        min_value=1, max_value=3650, allow_null=True, required=False, default=None
    )
    sd_aid = serializers.CharField(max_length=32)
    application_aid = serializers.CharField(max_length=32, required=False, allow_blank=True, default="")


class ConsentHistoryOut(serializers.Serializer):
    seq = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    tag = serializers.CharField()
    actor = serializers.CharField(source="actor_username")
    details = serializers.DictField()
    hash = serializers.CharField()


class AuditEventOut(serializers.Serializer):
    url = serializers.SerializerMethodField()
    seq = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    tag = serializers.CharField()
    actor = serializers.CharField(source="actor_username")
    acting_org = serializers.SerializerMethodField()
    on_behalf_of = serializers.SerializerMethodField()
    target_type = serializers.CharField()
    target_id = serializers.CharField()
    target = serializers.CharField(source="target_repr")
    details = serializers.DictField()
    hash = serializers.CharField()

    def get_url(self, obj: Any) -> str:
        return abs_url(self.context, "api:audit-detail", org=org_slug(self.context), pk=obj.seq)

    def _slug(self, org_id: Any) -> str | None:
        return self.context.get("org_slugs", {}).get(org_id) if org_id else None

    def get_acting_org(self, obj: Any) -> str | None:
        return self._slug(obj.acting_org_id)

    def get_on_behalf_of(self, obj: Any) -> str | None:
        return self._slug(obj.on_behalf_of_id)


class TokenIn(StrictSerializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=200, write_only=True)


class TokenOut(serializers.Serializer):
    token = serializers.CharField()
