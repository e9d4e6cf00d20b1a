"""Serializers of the devices API: output, and the enrolment input (single and batch rows)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from devices.models import DeviceKind, SecureElementKind
from portal.api import StrictSerializer
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

    def to_representation(self, instance: Any) -> Any:
        data = super().to_representation(instance)
        # Key sets (KCVs only) when the adapter supplied the ones the actor may see.
        by_sd = self.context.get("key_sets_by_sd")
        if by_sd is not None:
            data["key_sets"] = by_sd.get(instance.pk, [])
        return data


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
    end_of_service = serializers.DateField(allow_null=True)

    def get_url(self, obj: Any) -> str:
        return abs_url(self.context, "api:device-detail", org=org_slug(self.context), pk=obj.pk)

    def get_holder(self, obj: Any) -> str | None:
        return _slug(obj.holder)

    def get_subscriber(self, obj: Any) -> str | None:
        return _slug(obj.subscriber)


class DeviceDetailOut(DeviceOut):
    identity_public_key = serializers.CharField()
    key_id = serializers.CharField(source="identity_key_id", allow_null=True)
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


# --- enrolment input (the shapes `agent init` prints; see docs in devices.api) ----------------


class DeviceIn(StrictSerializer):
    serial = serializers.CharField(max_length=64)
    kind = serializers.ChoiceField(choices=DeviceKind.choices)
    identity_public_key = serializers.CharField(max_length=4000, trim_whitespace=False)
    key_id = serializers.CharField(max_length=64, required=False)
    se_issuer = serializers.CharField(max_length=50, required=False)
    se_serial = serializers.CharField(max_length=64, required=False)
    end_of_service = serializers.DateField(required=False, allow_null=True)


class DeviceUpdateIn(StrictSerializer):
    """``PATCH devices/<id>/``: what the manufacturer or SE issuer may change (``null`` clears)."""

    end_of_service = serializers.DateField(allow_null=True)


class DeviceBatchIn(StrictSerializer):
    devices = serializers.ListField(child=serializers.JSONField(), allow_empty=False)


class IsdKeysIn(StrictSerializer):
    """The ISD key set: hex keys — or the whole hand-over file `agent init` writes, whose other
    fields, when present, must agree with the request (a file for another SE is refused)."""

    enc = serializers.CharField(max_length=64)
    mac = serializers.CharField(max_length=64)
    dek = serializers.CharField(max_length=64)
    kvn = serializers.IntegerField(min_value=1, max_value=0x7F, required=False)
    se_serial = serializers.CharField(max_length=64, required=False)
    isd_aid = serializers.CharField(max_length=32, required=False)
    i_param = serializers.IntegerField(min_value=0, max_value=0xFF, required=False)
    sequence_counter = serializers.IntegerField(
        min_value=0, max_value=0xFFFFFF, required=False, allow_null=True
    )
    key_type = serializers.CharField(max_length=16, required=False)
    purpose = serializers.CharField(max_length=200, required=False)


class DeviceRefIn(StrictSerializer):
    manufacturer = serializers.CharField(max_length=50)
    serial = serializers.CharField(max_length=64)


class SecureElementIn(StrictSerializer):
    serial = serializers.CharField(max_length=64)
    kind = serializers.ChoiceField(choices=SecureElementKind.choices, default=SecureElementKind.SE)
    cplc = serializers.CharField(max_length=128, required=False, allow_blank=True)
    isd_aid = serializers.CharField(max_length=32)
    # An SE's ISD key set (required for kind "se", i_param defaulting to 0x70); a TEE has none and
    # is refused one (``keys.services.check_isd_key_inputs``, 400 isd_keys_not_for_tee).
    isd_keys = IsdKeysIn(required=False)
    kvn = serializers.IntegerField(min_value=1, max_value=0x7F, required=False)
    i_param = serializers.IntegerField(min_value=0, max_value=0xFF, required=False)
    sequence_counter = serializers.IntegerField(
        min_value=0, max_value=0xFFFFFF, required=False, allow_null=True
    )
    device = DeviceRefIn(required=False)
    casd_public_key = serializers.CharField(
        max_length=400,
        required=False,
        allow_blank=True,
        help_text="the CASD's public key generated in the SE (hex 04‖X‖Y or SPKI PEM), for the CA to certify",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        keys = attrs.get("isd_keys")
        if keys is None:
            return attrs
        mine = {"kvn": attrs.get("kvn"), "se_serial": attrs["serial"], "i_param": attrs.get("i_param", 0x70)}
        if "sequence_counter" in attrs:
            mine["sequence_counter"] = attrs["sequence_counter"]
        for name, value in mine.items():
            if name in keys and keys[name] != value:
                raise serializers.ValidationError({"isd_keys": [f"Its {name} differs from the request's."]})
        if "isd_aid" in keys and keys["isd_aid"].upper() != attrs["isd_aid"].upper():
            raise serializers.ValidationError({"isd_keys": ["Its isd_aid differs from the request's."]})
        return attrs


class SecureElementBatchIn(StrictSerializer):
    secure_elements = serializers.ListField(child=serializers.JSONField(), allow_empty=False)


class PairingOut(serializers.Serializer):
    device = serializers.CharField(allow_null=True)
    state = serializers.CharField()
