"""Input and output serializers of the jobs API. Steps show status words and counts, never APDUs."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from jobs.models import JobKind, ScriptMode
from portal.api import StrictSerializer
from tenants.serializers import abs_url, org_slug

PROVIDER_KINDS = ("load_keys_confidential", "run_script", "load_keys_scp11")


def _is_party(context: dict[str, Any], obj: Any) -> bool:
    subject = context.get("subject_id")
    return subject is not None and subject in (obj.beneficiary_id, obj.requested_by_id, obj.on_behalf_of_id)


class JobRequestIn(StrictSerializer):
    kind = serializers.ChoiceField(choices=JobKind.choices)
    params = serializers.DictField(required=False, default=dict)
    mode = serializers.ChoiceField(choices=ScriptMode.choices, required=False)


class JobInputIn(StrictSerializer):
    """Round 2 of load_keys_scp11: the provider's wrapped commands and the key set they carry."""

    commands = serializers.ListField(child=serializers.CharField(max_length=600), min_length=1, max_length=8)
    kvn = serializers.IntegerField(min_value=1, max_value=0x7F)
    key_length = serializers.ChoiceField(choices=[16, 24, 32])
    kcvs = serializers.DictField(child=serializers.CharField(max_length=6))


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
        # A provider's key check values, and its script, are the provider's (and its TSM's) to see.
        if obj.kind in PROVIDER_KINDS and not _is_party(self.context, obj):
            for key in ("kcvs", "commands", "authenticate", "deliver"):
                if key in params:
                    params[key] = "hidden"
        return params


class JobDetailOut(JobOut):
    steps = serializers.SerializerMethodField()
    result = serializers.SerializerMethodField()

    def get_result(self, obj: Any) -> dict[str, Any]:
        """What the card answered, for the requester and the beneficiary: a key load's receipt, KVN,
        counter and KCVs; a relayed script's responses. Others see the job's state only."""
        if obj.kind not in PROVIDER_KINDS + ("casd_personalize",) or not _is_party(self.context, obj):
            return {}
        keep = (
            "receipt",
            "kvn",
            "counter",
            "kcvs",
            "responses",
            "authenticate",
            "certificate_serial",
            "ca_identifier",
            "revoked",
        )
        return {k: v for k, v in obj.result.items() if k in keep}

    def get_steps(self, obj: Any) -> list[dict[str, Any]]:
        return list(JobStepOut(obj.steps.all().order_by("id"), many=True).data)
