"""API shapes of campaigns. The new provider sees progress and devices, never how the devices
were selected (which names the old provider), the campaign's name, nor refusal messages (which may
name the old provider's contract): only their codes (``access.view_of``)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from campaigns.access import view_of
from campaigns.services import campaign_counts, campaign_group_counts
from portal.api import StrictSerializer
from switches.models import KeysMode
from tenants.serializers import abs_url, org_slug


class FractionField(serializers.FloatField):
    """A number from 0 to 1; booleans and strings are refused (not coerced)."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class CampaignIn(StrictSerializer):
    name = serializers.CharField(max_length=120, required=False, allow_blank=True)
    new_provider = serializers.CharField(max_length=50)
    service = serializers.CharField(max_length=120, required=False)
    keys_mode = serializers.ChoiceField(choices=KeysMode.values, required=False)
    app = serializers.DictField(required=False)
    devices = serializers.ListField(
        child=serializers.CharField(max_length=64), required=False, min_length=1, max_length=10_000
    )
    filter = serializers.DictField(child=serializers.CharField(max_length=120), required=False)
    groups = serializers.ListField(
        child=serializers.ListField(
            child=serializers.CharField(max_length=64), min_length=1, max_length=10_000
        ),
        required=False,
        min_length=1,
        max_length=1_000,
    )
    group_size = StrictIntegerField(required=False, min_value=1, max_value=10_000)
    success_threshold = FractionField(required=False, min_value=0, max_value=1)
    error_threshold = FractionField(required=False, min_value=0, max_value=1)
    rate_per_minute = StrictIntegerField(required=False, min_value=1, max_value=100_000)
    max_in_flight = StrictIntegerField(required=False, min_value=1, max_value=100_000)
    start = serializers.BooleanField(required=False, default=False)

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict) and "start" in data and not isinstance(data["start"], bool):
            raise serializers.ValidationError({"start": ["Expected true or false."]})
        return super().to_internal_value(data)


class CampaignOut(serializers.Serializer):
    url = serializers.SerializerMethodField()
    id = serializers.UUIDField()
    new_provider = serializers.CharField(source="new_provider.slug")
    state = serializers.CharField()
    group = serializers.SerializerMethodField()
    groups = serializers.IntegerField(source="group_count")
    keys_mode = serializers.CharField()
    success_threshold = serializers.FloatField()
    error_threshold = serializers.FloatField()
    rate_per_minute = serializers.IntegerField()
    max_in_flight = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)

    def get_url(self, obj: Any) -> str:
        return abs_url(self.context, "api:campaign-detail", org=org_slug(self.context), pk=obj.pk)

    def get_group(self, obj: Any) -> int:
        return int(obj.current_group) + 1

    def to_representation(self, obj: Any) -> dict[str, Any]:
        data = super().to_representation(obj)
        data["counts"] = campaign_counts(obj)
        if view_of(self.context["actor"], obj) == "full":
            data.update(
                name=obj.name,
                owner=obj.owner.slug,
                service=obj.service,
                selection=obj.selection,
                app=obj.app,
                reason=obj.reason,
            )
        if self.context.get("detail"):
            data["per_group"] = campaign_group_counts(obj)
        return data


class TargetOut(serializers.Serializer):
    device = serializers.CharField(source="device.serial")
    group = serializers.SerializerMethodField()
    position = serializers.IntegerField()
    state = serializers.CharField()
    switch = serializers.UUIDField(source="switch_id", allow_null=True)
    reason_code = serializers.CharField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)

    def get_group(self, obj: Any) -> int:
        return int(obj.group) + 1

    def to_representation(self, obj: Any) -> dict[str, Any]:
        data = super().to_representation(obj)
        if self.context.get("view") == "full":
            data["reason"] = obj.reason
        return data
