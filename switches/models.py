"""A provider switch: one device, one service, from ``old_provider`` to ``new_provider``.

The saga's position is ``step`` (a name of ``switches.saga.FORWARD`` or ``COMPENSATE``) and the job
running it (``current_job``); ``log`` keeps each finished step with its job and outcome. Only one
switch per device runs at a time (a partial unique index), so a second request is refused.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q
from django.utils import timezone

from devices.models import Device
from tenants.models import Contract, Organisation


class SwitchState(models.TextChoices):
    RUNNING = "running", "Setting up the new provider"
    AWAITING_KEYS = "awaiting_keys", "Waiting for the new provider's key-loading package"
    COMPENSATING = "compensating", "Undoing: the old provider keeps serving"
    COMPLETED = "completed", "Switched"
    ROLLED_BACK = "rolled_back", "Not switched (undone cleanly; the old provider keeps serving)"
    FAILED = "failed", "Needs attention (undo did not finish)"


ACTIVE_SWITCH_STATES = (SwitchState.RUNNING, SwitchState.AWAITING_KEYS, SwitchState.COMPENSATING)
FINAL_SWITCH_STATES = (SwitchState.COMPLETED, SwitchState.ROLLED_BACK, SwitchState.FAILED)


class Initiator(models.TextChoices):
    SUBSCRIBER = "subscriber", "The subscriber"
    ISSUER = "issuer", "The SE issuer (device owner or lessor)"


class KeysMode(models.TextChoices):
    CONFIDENTIAL = "confidential", "The new provider loads its own keys (CA package; Tessera never sees them)"
    PORTAL = "portal", "Tessera generates the new provider's keys into its vault (key rotation)"


class Switch(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="switches")
    subscriber = models.ForeignKey(
        Organisation, null=True, on_delete=models.SET_NULL, related_name="switches_as_subscriber"
    )
    issuer = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="switches_as_issuer")
    old_provider = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="switches_lost")
    new_provider = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="switches_won")
    old_contract = models.ForeignKey(Contract, on_delete=models.CASCADE, related_name="switches_from")
    new_contract = models.ForeignKey(Contract, on_delete=models.CASCADE, related_name="switches_to")
    initiator = models.CharField(max_length=12, choices=Initiator.choices)
    requested_by = models.ForeignKey(
        Organisation, on_delete=models.CASCADE, related_name="switches_requested"
    )
    campaign_id = models.UUIDField(null=True, blank=True, db_index=True)
    keys_mode = models.CharField(max_length=12, choices=KeysMode.choices)
    new_sd_aid = models.CharField(max_length=32)
    old_sd_aids = models.JSONField(default=list)
    app = models.JSONField(default=dict, blank=True, help_text="The new provider's application to install")
    state = models.CharField(max_length=16, choices=SwitchState.choices, default=SwitchState.RUNNING)
    step = models.CharField(max_length=24)
    step_attempt = models.PositiveSmallIntegerField(default=1)
    current_job = models.ForeignKey(
        "jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    log = models.JSONField(default=list, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.CharField(max_length=500, blank=True)
    keys_deadline = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["device"],
                condition=Q(state__in=["running", "awaiting_keys", "compensating"]),
                name="one_running_switch_per_device",
            )
        ]
        indexes = [models.Index(fields=["state", "updated_at"], name="switch_state_updated")]

    def __str__(self) -> str:
        return f"Switch of {self.device_id}: {self.get_state_display()}"

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_SWITCH_STATES
