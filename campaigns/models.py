"""A campaign switches the provider of many devices: one ``Campaign`` and one ``CampaignTarget`` per
device, each running (at most) one provider switch (``switches.Switch``).

Devices are worked through in ordered groups; the driver (``campaigns.services.campaign_tick``)
starts switches within the current group under a rate limit and an in-flight limit, opens the next
group when the current one is done and met the success threshold, and stops the campaign when the
share of errors passes the error threshold.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone

from devices.models import Device
from switches.models import KeysMode
from tenants.models import Organisation


class CampaignState(models.TextChoices):
    DRAFT = "draft", "Draft (not started)"
    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused (running switches finish; none start)"
    COMPLETED = "completed", "Completed"
    STOPPED = "stopped", "Stopped (error threshold passed)"
    CANCELED = "canceled", "Canceled"


FINAL_CAMPAIGN_STATES = (CampaignState.COMPLETED, CampaignState.STOPPED, CampaignState.CANCELED)


class TargetState(models.TextChoices):
    PENDING = "pending", "Waiting for its turn"
    RUNNING = "running", "Switching"
    COMPLETED = "completed", "Switched"
    ROLLED_BACK = "rolled_back", "Not switched (undone cleanly)"
    FAILED = "failed", "Needs attention (the switch's undo did not finish)"
    SKIPPED = "skipped", "Skipped (the switch was refused)"
    CANCELED = "canceled", "Not started (campaign ended)"


FINAL_TARGET_STATES = (
    TargetState.COMPLETED,
    TargetState.ROLLED_BACK,
    TargetState.FAILED,
    TargetState.SKIPPED,
    TargetState.CANCELED,
)
# What counts against the error threshold (a refused switch is an error: a batch where devices
# cannot even start is one to stop and look at).
ERROR_TARGET_STATES = (TargetState.ROLLED_BACK, TargetState.FAILED, TargetState.SKIPPED)


class Campaign(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=120, blank=True)
    # The SE issuer of every targeted device: switches are requested as it.
    owner = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="campaigns")
    # Who created it: the owner itself, or a TSM acting on its behalf.
    created_by = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="campaigns_created")
    new_provider = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="campaigns_won")
    service = models.CharField(max_length=120, blank=True)
    keys_mode = models.CharField(max_length=12, choices=KeysMode.choices, default=KeysMode.PORTAL)
    app = models.JSONField(default=dict, blank=True)
    # How the targets were chosen: {"devices": n} or {"old_provider", "service", "device_kind"}.
    selection = models.JSONField(default=dict, blank=True)
    group_count = models.PositiveIntegerField(default=1)
    success_threshold = models.FloatField(default=0.95)
    error_threshold = models.FloatField(default=0.05)
    rate_per_minute = models.PositiveIntegerField(default=60)
    max_in_flight = models.PositiveIntegerField(default=10)
    state = models.CharField(max_length=12, choices=CampaignState.choices, default=CampaignState.DRAFT)
    current_group = models.PositiveIntegerField(default=0)
    reason = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    progress_published_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["state"], name="campaign_state")]

    def __str__(self) -> str:
        return f"Campaign {self.name or self.pk}: {self.get_state_display()}"

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_CAMPAIGN_STATES


class CampaignTarget(models.Model):
    id = models.BigAutoField(primary_key=True)
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="targets")
    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="campaign_targets")
    group = models.PositiveIntegerField()
    position = models.PositiveIntegerField()
    state = models.CharField(max_length=12, choices=TargetState.choices, default=TargetState.PENDING)
    switch = models.ForeignKey(
        "switches.Switch", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reason_code = models.CharField(max_length=64, blank=True)
    reason = models.CharField(max_length=300, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["group", "position"]
        constraints = [models.UniqueConstraint(fields=["campaign", "device"], name="campaign_device_once")]
        indexes = [
            models.Index(fields=["campaign", "group", "state"], name="ctarget_group_state"),
            models.Index(fields=["campaign", "started_at"], name="ctarget_started"),
        ]

    def __str__(self) -> str:
        return f"{self.device_id} in {self.campaign_id}: {self.state}"
