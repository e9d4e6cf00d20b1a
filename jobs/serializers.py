"""Input and output serializers of the jobs API. Steps show status words and counts, never APDUs."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from jobs.models import JobKind, ScriptMode
from portal.api import StrictSerializer
from tenants.serializers import abs_url, org_slug


class JobRequestIn(StrictSerializer):
    kind = serializers.ChoiceField(choices=JobKind.choices)
    params = serializers.DictField(required=False, default=dict)
    mode = serializers.ChoiceField(choices=ScriptMode.choices, required=False)


class JobStepOut(serializers.Serializer):
    index = serializers.IntegerField()
    name = serializers.CharField()
    attempt = serializers.IntegerField()
    phase = serializers.CharField()
    state = serializers.CharField()
    mode = serializers.SerializerMethodField()
    commands = serializers.SerializerMethodField()
    report_status = serializers.CharField()
    outcome = serializers.DictField()
    dispatched_at = serializers.DateTimeField(allow_null=True)
    reported_at = serializers.DateTimeField(allow_null=True)

    def get_mode(self, obj: Any) -> str:
        return str(obj.session.get("mode", ""))

    def get_commands(self, obj: Any) -> int:
        return len(obj.commands)


class JobOut(serializers.Serializer):
    url = serializers.SerializerMethodField()
    id = serializers.UUIDField()
    kind = serializers.CharField()
    state = serializers.CharField()
    mode = serializers.CharField()
    device = serializers.CharField(source="device.serial")
    device_id = serializers.UUIDField()
    target_aid = serializers.CharField()
    requested_by = serializers.CharField(source="requested_by.slug")
    on_behalf_of = serializers.SerializerMethodField()
    beneficiary = serializers.SerializerMethodField()
    params = serializers.SerializerMethodField()
    step_index = serializers.IntegerField()
    attempts = serializers.IntegerField()
    error_code = serializers.CharField()
    error_message = serializers.CharField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)

    def get_url(self, obj: Any) -> str:
        return abs_url(self.context, "api:job-detail", org=org_slug(self.context), pk=obj.pk)

    def get_on_behalf_of(self, obj: Any) -> str | None:
        return obj.on_behalf_of.slug if obj.on_behalf_of_id else None

    def get_beneficiary(self, obj: Any) -> str | None:
        return obj.beneficiary.slug if obj.beneficiary_id else None

    def get_params(self, obj: Any) -> dict[str, Any]:
        # Personalisation data belongs to the application owner: others see its shape only.
        params = dict(obj.params)
        if "data" in params and self.context.get("subject_id") != obj.beneficiary_id:
            params["data"] = [{"dgi": d["dgi"], "length": len(d["value"]) // 2} for d in params["data"]]
        return params


class JobDetailOut(JobOut):
    steps = serializers.SerializerMethodField()

    def get_steps(self, obj: Any) -> list[dict[str, Any]]:
        return list(JobStepOut(obj.steps.all().order_by("id"), many=True).data)
