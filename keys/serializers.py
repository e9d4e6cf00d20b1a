"""Output of key sets: key check values, never key bytes; with the key policy's assessment."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from keys import rotation

_UNSET = object()


class KeySetOut(serializers.Serializer):
    """A key set as KCVs. ``assessment`` (keys.policy) is judged against the device's end of
    service: the context's ``end_of_service`` when the caller knows it (one device's page), else
    the key set's own device."""

    id = serializers.UUIDField()
    kvn = serializers.IntegerField()
    scp = serializers.CharField()
    algorithm = serializers.CharField()
    key_length = serializers.IntegerField()
    status = serializers.CharField()
    custody = serializers.CharField(
        help_text="portal: sealed in the owner's vault; provider: only the SE and the provider hold the keys"
    )
    kcv = serializers.SerializerMethodField()
    sequence_counter = serializers.IntegerField(allow_null=True)
    i_param = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    crypto_period_end = serializers.DateField(allow_null=True)
    assessment = serializers.SerializerMethodField()

    def get_kcv(self, obj: Any) -> dict[str, str]:
        return obj.kcvs

    def get_assessment(self, obj: Any) -> dict[str, Any] | None:
        if obj.status == "destroyed":
            return None
        eos = self.context.get("end_of_service", _UNSET)
        if eos is _UNSET:
            eos = rotation.device_end_of_service(obj)
        policy = self.context.get("policy")
        day = self.context.get("today") or rotation.today()
        a = rotation.assess_key_set(obj, eos, day, policy)
        return a.as_dict() if a is not None else None


class KeySetListOut(KeySetOut):
    """A key set in an organisation-wide list: where it sits."""

    security_domain = serializers.CharField(source="security_domain.aid")
    device = serializers.SerializerMethodField()
    device_end_of_service = serializers.SerializerMethodField()

    def get_device(self, obj: Any) -> dict[str, Any] | None:
        device = obj.security_domain.secure_element.device
        return {"id": str(device.pk), "serial": device.serial} if device is not None else None

    def get_device_end_of_service(self, obj: Any) -> str | None:
        eos = rotation.device_end_of_service(obj)
        return eos.isoformat() if eos else None
