"""API shapes of provider switches. What a switch shows depends on who looks (``access.view_of``):
the new provider never sees the old one, the old provider never sees the new one."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from portal.api import StrictSerializer
from switches.access import view_of
from switches.models import KeysMode
from tenants.serializers import abs_url, org_slug


class SwitchIn(StrictSerializer):
    device = serializers.CharField(max_length=64)
    new_provider = serializers.CharField(max_length=64)
    service = serializers.CharField(max_length=120, required=False)
    new_sd_aid = serializers.CharField(max_length=32, required=False)
    keys_mode = serializers.ChoiceField(
        choices=KeysMode.values, required=False, default=KeysMode.CONFIDENTIAL
    )
    app = serializers.DictField(required=False)


class SwitchOut(serializers.Serializer):
    url = serializers.SerializerMethodField()
    id = serializers.UUIDField()
    device = serializers.CharField(source="device.serial")
    service = serializers.CharField(source="new_contract.service")
    state = serializers.CharField()
    step = serializers.CharField()
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)

    def get_url(self, obj: Any) -> str:
        return abs_url(self.context, "api:switch-detail", org=org_slug(self.context), pk=obj.pk)

    def to_representation(self, obj: Any) -> dict[str, Any]:
        data = super().to_representation(obj)
        view = view_of(self.context["actor"], obj)
        if view == "old":
            # Only that the device is lost: no new provider, no steps, no new SD.
            return {
                "url": data["url"],
                "id": data["id"],
                "device": data["device"],
                "service": obj.old_contract.service,
                "state": "lost",
                "finished_at": data["finished_at"],
            }
        data.update(
            new_provider=obj.new_provider.slug,
            new_sd_aid=obj.new_sd_aid,
            keys_mode=obj.keys_mode,
            initiator=obj.initiator,
            campaign=str(obj.campaign_id) if obj.campaign_id else None,
            error_code=obj.error_code,
            error_message=obj.error_message,
            current_job=str(obj.current_job_id) if obj.current_job_id else None,
            log=[e for e in obj.log if view == "full" or not e["step"].startswith("delete_old")],
        )
        if view == "full":
            data.update(old_provider=obj.old_provider.slug, old_sd_aids=obj.old_sd_aids)
        return data
