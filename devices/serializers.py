"""Output serializers for devices (read-only until enrolment lands)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from tenants.serializers import abs_url, org_slug


def _slug(org: Any) -> str | None:
    return org.slug if org is not None else None


class SecurityDomainOut(serializers.Serializer):
    url = serializers.SerializerMethodField()
    id = serializers.UUIDField()
    aid = serializers.CharField()
    is_isd = serializers.BooleanField()
    owner = serializers.CharField(source="owner.slug")
    parent_aid = serializers.SerializerMethodField()
    secure_element = serializers.UUIDField(source="secure_element_id")
    privileges = serializers.ListField(child=serializers.CharField())
    life_cycle = serializers.CharField()

    def get_url(self, obj: Any) -> str:
        return abs_url(self.context, "api:security-domain-detail", org=org_slug(self.context), pk=obj.pk)

    def get_parent_aid(self, obj: Any) -> str | None:
        return obj.parent.aid if obj.parent_id else None


class SecureElementOut(serializers.Serializer):
    url = serializers.SerializerMethodField()
    id = serializers.UUIDField()
    kind = serializers.CharField()
    serial = serializers.CharField()
    issuer = serializers.CharField(source="issuer.slug")
    supplier = serializers.SerializerMethodField()
    device = serializers.SerializerMethodField()
    cplc = serializers.CharField()
    iin = serializers.CharField()
    cin = serializers.CharField()
    life_cycle = serializers.CharField()

    def get_url(self, obj: Any) -> str:
        return abs_url(self.context, "api:secure-element-detail", org=org_slug(self.context), pk=obj.pk)

    def get_supplier(self, obj: Any) -> str | None:
        return _slug(obj.supplier)

    def get_device(self, obj: Any) -> str | None:
        return obj.device.serial if obj.device_id else None


class DeviceOut(serializers.Serializer):
    url = serializers.SerializerMethodField()
    id = serializers.UUIDField()
    serial = serializers.CharField()
    kind = serializers.CharField()
    status = serializers.CharField()
    manufacturer = serializers.CharField(source="manufacturer.slug")
    holder = serializers.SerializerMethodField()
    subscriber = serializers.SerializerMethodField()
    last_seen_at = serializers.DateTimeField(allow_null=True)

    def get_url(self, obj: Any) -> str:
        return abs_url(self.context, "api:device-detail", org=org_slug(self.context), pk=obj.pk)

    def get_holder(self, obj: Any) -> str | None:
        return _slug(obj.holder)

    def get_subscriber(self, obj: Any) -> str | None:
        return _slug(obj.subscriber)


class DeviceDetailOut(DeviceOut):
    identity_public_key = serializers.CharField()
    secure_elements = serializers.SerializerMethodField()

    def get_secure_elements(self, obj: Any) -> list[dict[str, Any]]:
        out = []
        sds_by_se = self.context.get("sds_by_se", {})
        for se in self.context.get("secure_elements", []):
            data = dict(SecureElementOut(se, context=self.context).data)
            data["security_domains"] = SecurityDomainOut(
                sds_by_se.get(se.pk, []), many=True, context=self.context
            ).data
            out.append(data)
        return out
