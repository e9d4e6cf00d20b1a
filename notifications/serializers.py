"""Input and output serializers of the webhooks API (no writes here: the services decide)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers
from rest_framework.reverse import reverse

from notifications.events import MAX_PATTERNS
from notifications.models import Webhook
from portal.api import StrictSerializer


class WebhookIn(StrictSerializer):
    url = serializers.CharField(max_length=2000, help_text="https:// URL that receives the POSTs.")
    event_types = serializers.ListField(
        child=serializers.CharField(max_length=60),
        allow_empty=False,
        max_length=MAX_PATTERNS,
        help_text='Patterns: "*", "job.*", "consent.*", "switch.*", "campaign.*" or e.g. "job.succeeded".',
    )
    description = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


class WebhookPatchIn(StrictSerializer):
    url = serializers.CharField(max_length=2000, required=False)
    event_types = serializers.ListField(
        child=serializers.CharField(max_length=60), allow_empty=False, max_length=MAX_PATTERNS, required=False
    )
    description = serializers.CharField(max_length=200, required=False, allow_blank=True)
    active = serializers.BooleanField(required=False)

    def to_internal_value(self, data: Any) -> Any:
        # BooleanField takes "yes", 1…; an API client that sends those has a bug worth hearing about.
        if isinstance(data, dict) and "active" in data and not isinstance(data["active"], bool):
            raise serializers.ValidationError({"active": ["Expected true or false."]})
        return super().to_internal_value(data)


class RotateSecretIn(StrictSerializer):
    expire_previous = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Stop signing with the previous secret at once (it leaked); otherwise it also "
        "signs for 24 hours.",
    )

    def to_internal_value(self, data: Any) -> Any:
        if (
            isinstance(data, dict)
            and "expire_previous" in data
            and not isinstance(data["expire_previous"], bool)
        ):
            raise serializers.ValidationError({"expire_previous": ["Expected true or false."]})
        return super().to_internal_value(data)


class WebhookOut(serializers.Serializer):
    id = serializers.UUIDField()
    url = serializers.CharField()
    description = serializers.CharField()
    event_types = serializers.ListField(child=serializers.CharField())
    active = serializers.BooleanField()
    disabled_reason = serializers.CharField()
    secret_rotated_at = serializers.DateTimeField()
    previous_secret_expires_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    deliveries = serializers.SerializerMethodField()

    def get_deliveries(self, obj: Webhook) -> str:
        return reverse(
            "api:webhook-deliveries",
            kwargs={"org": self.context["org"], "pk": obj.pk},
            request=self.context.get("request"),
        )


class WebhookSecretOut(WebhookOut):
    secret = serializers.SerializerMethodField(help_text="Shown once: store it now.")

    def get_secret(self, obj: Webhook) -> str:
        return str(self.context["secret"])


class DeliveryOut(serializers.Serializer):
    id = serializers.UUIDField()
    event_id = serializers.UUIDField()
    event_type = serializers.CharField()
    status = serializers.CharField()
    attempts = serializers.IntegerField()
    last_status_code = serializers.IntegerField(allow_null=True)
    last_error = serializers.CharField()
    attempts_log = serializers.JSONField()
    next_attempt_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()
    delivered_at = serializers.DateTimeField(allow_null=True)
    payload = serializers.JSONField()
