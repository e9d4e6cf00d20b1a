"""Organisations, their members, and the explicit rows through which they collaborate (DESIGN §5).

Isolation is a graph, not a partition: every tenant-owned row names its owner organisation and
collaboration happens only through ``Mandate``, ``Contract`` and ``Consent`` rows.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

SLUG_RE = r"^[a-z0-9](?:[a-z0-9-]{0,48}[a-z0-9])?$"
slug_validator = RegexValidator(
    SLUG_RE, "Use 1–50 lowercase letters, digits and inner hyphens (e.g. 'grid-operator')."
)


class OrgRole(models.TextChoices):
    """The stakeholder roles of GlobalPlatform's IoT model (DESIGN §2). An organisation may hold several."""

    SE_SUPPLIER = "SES", "SE Supplier"
    SE_ISSUER = "SEI", "SE Issuer"
    DEVICE_MANUFACTURER = "DM", "Device Manufacturer"
    CONTROLLING_AUTHORITY = "CA", "Controlling Authority"
    TSM = "TSM", "Trusted Service Manager"
    SERVICE_PROVIDER = "SP", "Service Provider"
    APPLICATION_PROVIDER = "AP", "Application Provider"
    SERVICE_SUBSCRIBER = "SS", "Service Subscriber"
    NETWORK_PROVIDER = "NP", "Network Provider"
    NETWORK_SUBSCRIBER = "NS", "Network Subscriber"


class OrgStatus(models.TextChoices):
    PENDING = "pending", "Pending approval"
    ACTIVE = "active", "Active"
    SUSPENDED = "suspended", "Suspended"
    REJECTED = "rejected", "Rejected"


class Organisation(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=120)
    slug = models.CharField(max_length=50, unique=True, validators=[slug_validator])
    status = models.CharField(max_length=16, choices=OrgStatus.choices, default=OrgStatus.PENDING)
    roles = models.JSONField(default=list, help_text="List of OrgRole codes")
    contact_name = models.CharField(max_length=120, blank=True)
    contact_email = models.EmailField(blank=True)
    application_note = models.TextField(blank=True, max_length=2000)
    created_at = models.DateTimeField(default=timezone.now)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def has_role(self, role: str) -> bool:
        return role in self.roles

    @property
    def is_active(self) -> bool:
        return self.status == OrgStatus.ACTIVE

    def role_labels(self) -> list[str]:
        return [OrgRole(r).label for r in self.roles if r in OrgRole.values]


class MemberRole(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    OPERATOR = "operator", "Operator"
    AUDITOR = "auditor", "Auditor"


class Membership(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    org = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=MemberRole.choices)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "org"], name="membership_user_org_unique")]
        ordering = ["org__name", "user__username"]

    def __str__(self) -> str:
        return f"{self.user} @ {self.org} ({self.role})"


class Invitation(models.Model):
    """An emailed link to join an organisation. Only the token's SHA-256 is stored."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    org = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    role = models.CharField(max_length=16, choices=MemberRole.choices)
    token_hash = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"invitation of {self.email} to {self.org}"

    @property
    def state(self) -> str:
        if self.accepted_at:
            return "accepted"
        if self.revoked_at:
            return "revoked"
        if self.expires_at <= timezone.now():
            return "expired"
        return "open"


class MandateAction(models.TextChoices):
    """What a grantee may do for its grantor. Checked whenever it acts on the grantor's behalf."""

    DEVICES_VIEW = "devices.view", "See the grantor's devices, secure elements and security domains"
    SD_CREATE = "sd.create", "Create security domains"
    SD_DELETE = "sd.delete", "Delete security domains"
    SD_LOCK = "sd.lock", "Lock and unlock security domains and applications"
    KEYS_LOAD = "keys.load", "Load keys"
    KEYS_ROTATE = "keys.rotate", "Rotate keys"
    APPS_MANAGE = "apps.manage", "Install, personalise and delete applications"
    STATUS_READ = "status.read", "Read card status"
    AUDIT_VIEW = "audit.view", "See the grantor's audit trail"
    SE_SUPPLY = "se.supply", "Supply secure elements: upload manufacturing batches (ISD keys wrapped to us)"


class Mandate(models.Model):
    """ "TSM X may create SDs and load keys for me on devices of SEI Y" (DESIGN §5).

    ``scope`` narrows the devices: ``{"issuer": "<org slug>"}``, ``{"device_kinds": [...]}``,
    ``{"serials": [...]}``; empty means every device the grantor may act on.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    grantor = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="mandates_granted")
    grantee = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="mandates_received")
    actions = models.JSONField(default=list)
    scope = models.JSONField(default=dict, blank=True)
    valid_from = models.DateTimeField(default=timezone.now)
    valid_until = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["grantee", "grantor"])]
        constraints = [
            models.CheckConstraint(condition=~Q(grantor=models.F("grantee")), name="mandate_not_to_self"),
        ]

    def __str__(self) -> str:
        return f"{self.grantor} → {self.grantee}: {', '.join(self.actions)}"

    @classmethod
    def active_q(cls, at: object | None = None) -> Q:
        now = at or timezone.now()
        return Q(revoked_at__isnull=True, valid_from__lte=now) & (
            Q(valid_until__isnull=True) | Q(valid_until__gt=now)
        )

    @property
    def state(self) -> str:
        now = timezone.now()
        if self.revoked_at:
            return "revoked"
        if self.valid_from > now:
            return "future"
        if self.valid_until and self.valid_until <= now:
            return "expired"
        return "active"


class ContractStatus(models.TextChoices):
    PENDING = "pending", "Starting (switch in progress)"
    ACTIVE = "active", "In force"
    ENDED = "ended", "Ended"
    CANCELED = "canceled", "Canceled (never started)"


class Contract(models.Model):
    """A subscriber's contract with a provider for a service on one device (workflows: issue 6)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    subscriber = models.ForeignKey(
        Organisation, on_delete=models.CASCADE, related_name="contracts_as_subscriber"
    )
    provider = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="contracts_as_provider")
    device = models.ForeignKey("devices.Device", on_delete=models.CASCADE, related_name="contracts")
    service = models.CharField(max_length=120)
    switch_allowed = models.BooleanField(default=False)
    notice_days = models.PositiveIntegerField(default=0)
    connectivity_payer = models.ForeignKey(
        Organisation, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    starts_at = models.DateTimeField(default=timezone.now)
    ends_at = models.DateTimeField(null=True, blank=True)
    # What happens to the provider's security domain when the subscriber's consent ends.
    on_consent_end = models.CharField(
        max_length=8, choices=[("delete", "Delete it"), ("lock", "Lock it")], default="delete"
    )
    status = models.CharField(max_length=12, choices=ContractStatus.choices, default=ContractStatus.ACTIVE)
    sd_aid = models.CharField(
        max_length=32, blank=True, help_text="The provider's security domain serving this contract"
    )
    consent_required = models.BooleanField(
        default=True,
        help_text="False: the provider's work under this contract needs no separate consent from the "
        "subscriber (e.g. a leased kit whose provider the lessor assigns); the subscriber is informed",
    )
    end_reason = models.CharField(max_length=32, blank=True)

    class Meta:
        ordering = ["-starts_at"]

    def __str__(self) -> str:
        return f"{self.service}: {self.provider} for {self.subscriber}"


class ConsentStatus(models.TextChoices):
    PENDING = "pending", "Waiting for your answer"
    GRANTED = "granted", "Allowed"
    DENIED = "denied", "Refused"
    REVOKED = "revoked", "Withdrawn"
    EXPIRED = "expired", "Ended (time is up)"


class Consent(models.Model):
    """A subscriber's consent that ``grantee`` may act on ``device`` for ``purpose`` (issue 6).

    A provider's request is a ``pending`` row; the subscriber moves it to ``granted`` or ``denied``
    and may later revoke it; the sweeper expires it. Only ``tenants.consent`` changes ``status``,
    by compare-and-set. ``sd_aid`` (and optionally ``application_aid``) say what it covers.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    subscriber = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="consents_given")
    grantee = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="consents_received")
    device = models.ForeignKey("devices.Device", on_delete=models.CASCADE, related_name="consents")
    purpose = models.CharField(max_length=200)
    scopes = models.JSONField(default=list)
    status = models.CharField(max_length=16, choices=ConsentStatus.choices, default=ConsentStatus.GRANTED)
    sd_aid = models.CharField(max_length=32, blank=True)
    application_aid = models.CharField(max_length=32, blank=True)
    duration_days = models.PositiveIntegerField(null=True, blank=True)
    requested_at = models.DateTimeField(default=timezone.now)
    requested_by_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    granted_at = models.DateTimeField(default=timezone.now, null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # The delete_security_domain (or lock) job started when the consent ended.
    removal_job_id = models.UUIDField(null=True, blank=True)

    class Meta:
        ordering = ["-requested_at"]
        indexes = [models.Index(fields=["device", "grantee", "status"], name="consent_device_grantee")]

    def __str__(self) -> str:
        return f"consent {self.subscriber} → {self.grantee}: {self.purpose}"

    @classmethod
    def active_q(cls, prefix: str = "") -> Q:
        now = timezone.now()
        return Q(
            **{
                f"{prefix}status": ConsentStatus.GRANTED,
                f"{prefix}revoked_at__isnull": True,
                f"{prefix}granted_at__lte": now,
            }
        ) & (Q(**{f"{prefix}expires_at__isnull": True}) | Q(**{f"{prefix}expires_at__gt": now}))

    @property
    def is_active(self) -> bool:
        now = timezone.now()
        return (
            self.status == ConsentStatus.GRANTED
            and self.revoked_at is None
            and self.granted_at is not None
            and self.granted_at <= now
            and (self.expires_at is None or self.expires_at > now)
        )


class ReceiptSigningKey(models.Model):
    """The platform's Ed25519 key that signs consent receipts. The private key (32 bytes) is
    wrapped by the vault's master key exactly like an organisation's data key; only the public
    key is ever served (``/api/v1/consent-receipts/key/``)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    public_raw = models.BinaryField()
    wrapped = models.BinaryField()
    master_key_id = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"consent receipt key {self.id}"
