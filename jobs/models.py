"""Jobs: one intended change on one SE/TEE, run as steps of GlobalPlatform scripts (DESIGN §7).

A job moves through ``JobState`` only by compare-and-set in ``jobs.services``; each step attempt is
one work item for the agent, idempotent by its ``item_id`` (job, step, attempt, phase).
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from devices.models import Device, SecureElement, SecurityDomain
from tenants.models import Organisation


class JobKind(models.TextChoices):
    CREATE_SECURITY_DOMAIN = "create_security_domain", "Create security domain"
    DELETE_SECURITY_DOMAIN = "delete_security_domain", "Delete security domain"
    ROTATE_KEYS = "rotate_keys", "Rotate keys"
    INSTALL_APPLICATION = "install_application", "Install application"
    PERSONALIZE_APPLICATION = "personalize_application", "Personalise application"
    DELETE_APPLICATION = "delete_application", "Delete application"
    LOCK = "lock", "Lock"
    UNLOCK = "unlock", "Unlock"
    READ_STATUS = "read_status", "Read status"
    CASD_PERSONALIZE = "casd_personalize", "Personalise the CASD (CA key, certificate, revocations)"
    LOAD_KEYS_CONFIDENTIAL = "load_keys_confidential", "Load keys confidentially (provider's package)"
    RUN_SCRIPT = "run_script", "Run the provider's own script"
    LOAD_KEYS_SCP11 = "load_keys_scp11", "Load keys over the provider's own SCP11a session (online)"


class JobState(models.TextChoices):
    AWAITING_CONSENT = "awaiting_consent", "Awaiting consent"
    QUEUED = "queued", "Queued"
    DISPATCHED = "dispatched", "Dispatched"
    RUNNING = "running", "Running"
    AWAITING_INPUT = "awaiting_input", "Awaiting the provider's next commands"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    REJECTED = "rejected", "Rejected"
    TIMED_OUT = "timed_out", "Timed out"
    CANCELED = "canceled", "Canceled"
    EXPIRED = "expired", "Expired"


TERMINAL_STATES = frozenset(
    {
        JobState.SUCCEEDED,
        JobState.FAILED,
        JobState.REJECTED,
        JobState.TIMED_OUT,
        JobState.CANCELED,
        JobState.EXPIRED,
    }
)
# awaiting_input: between the two rounds of load_keys_scp11, the card session is the job's.
ACTIVE_STATES = frozenset({JobState.QUEUED, JobState.DISPATCHED, JobState.RUNNING, JobState.AWAITING_INPUT})


class ScriptMode(models.TextChoices):
    PRECOMPUTED = "precomputed", "Precomputed (one wake-up)"
    INTERACTIVE = "interactive", "Interactive (online device)"


class Job(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=32, choices=JobKind.choices)
    state = models.CharField(max_length=20, choices=JobState.choices, default=JobState.QUEUED)
    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="jobs")
    secure_element = models.ForeignKey(SecureElement, on_delete=models.CASCADE, related_name="jobs")
    target_sd = models.ForeignKey(
        SecurityDomain,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="jobs",
        help_text="The security domain acted on (for create: none until it exists)",
    )
    target_aid = models.CharField(max_length=32, blank=True)
    requested_by = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="jobs_requested")
    on_behalf_of = models.ForeignKey(
        Organisation, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs_on_behalf"
    )
    beneficiary = models.ForeignKey(
        Organisation,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="jobs_benefiting",
        help_text="Owner of the security domain the job creates or changes",
    )
    requested_by_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    mode = models.CharField(max_length=16, choices=ScriptMode.choices, default=ScriptMode.PRECOMPUTED)
    params = models.JSONField(default=dict, blank=True)
    secrets_sealed = models.BinaryField(
        null=True, blank=True, help_text="New key material for this job, sealed in the beneficiary's vault"
    )
    result = models.JSONField(default=dict, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.CharField(max_length=500, blank=True)
    step_index = models.PositiveSmallIntegerField(default=0)
    attempts = models.PositiveSmallIntegerField(default=0)
    max_attempts = models.PositiveSmallIntegerField(default=3)
    not_before = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    no_show_deadline = models.DateTimeField(null=True, blank=True)
    overall_deadline = models.DateTimeField(null=True, blank=True)
    input_deadline = models.DateTimeField(
        null=True,
        blank=True,
        help_text="awaiting_input: the provider's next commands must arrive before this",
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["device", "state"], name="job_device_state"),
            models.Index(fields=["state", "updated_at"], name="job_state_updated"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} on {self.device_id}"

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES


class StepState(models.TextChoices):
    READY = "ready", "Ready to dispatch"
    DISPATCHED = "dispatched", "Dispatched"
    REPORTED = "reported", "Result reported"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    INTERRUPTED = "interrupted", "Interrupted"
    SUPERSEDED = "superseded", "Superseded"


class JobStep(models.Model):
    """One attempt of one step (one phase of it, for interactive scripts) = one agent work item.

    ``commands`` are wrapped APDUs (secured with the session keys; key components are encrypted
    under the DEK and the session key). The plain payload needed to verify the responses is held
    only sealed in the owner's vault (``payload_sealed``).
    """

    id = models.BigAutoField(primary_key=True)
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="steps")
    index = models.PositiveSmallIntegerField()
    name = models.CharField(max_length=40)
    attempt = models.PositiveSmallIntegerField(default=1)
    phase = models.CharField(max_length=16, default="script")
    item_id = models.CharField(max_length=80, unique=True)
    state = models.CharField(max_length=16, choices=StepState.choices, default=StepState.READY)
    session = models.JSONField(default=dict, blank=True)
    commands = models.JSONField(default=list, blank=True)
    payload_sealed = models.BinaryField(null=True, blank=True)
    responses = models.JSONField(default=list, blank=True)
    report_status = models.CharField(max_length=16, blank=True)
    report_detail = models.CharField(max_length=1000, blank=True)
    outcome = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    reported_at = models.DateTimeField(null=True, blank=True)
    deadline = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["job", "index", "attempt", "id"]
        indexes = [models.Index(fields=["state", "job"], name="jobstep_state_job")]

    def __str__(self) -> str:
        return self.item_id


class Application(models.Model):
    """An application instance on an SE, as last seen in its registry (GP CS §11.4 GET STATUS)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    secure_element = models.ForeignKey(SecureElement, on_delete=models.CASCADE, related_name="applications")
    security_domain = models.ForeignKey(SecurityDomain, on_delete=models.CASCADE, related_name="applications")
    aid = models.CharField(max_length=32)
    load_file_aid = models.CharField(max_length=32, blank=True)
    module_aid = models.CharField(max_length=32, blank=True)
    owner = models.ForeignKey(Organisation, on_delete=models.PROTECT, related_name="applications")
    life_cycle = models.CharField(max_length=24, default="SELECTABLE")
    privileges = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["aid"]
        constraints = [
            models.UniqueConstraint(fields=["secure_element", "aid"], name="app_aid_unique_per_se")
        ]

    def __str__(self) -> str:
        return f"App {self.aid}"
