"""The vault's per-organisation data keys and the SCP key sets it seals (DESIGN §6).

Key material never sits in a column in clear: ``KeySet.sealed`` is the vault's AES-256-GCM blob
(bound to the owner organisation and to ``keyset:<id>``), ``OrgDataKey.wrapped`` the data key
wrapped by the master key. Key check values (KCVs) are what people and APIs see.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q
from django.utils import timezone

from devices.models import SecurityDomain
from tenants.models import Organisation


class OrgDataKey(models.Model):
    """An organisation's data key, wrapped by the master key ``master_key_id``.

    Shredding empties ``wrapped`` and sets ``shredded_at``: every blob sealed for the organisation
    becomes unreadable for good (crypto-shredding), while the row records that it happened.
    """

    org = models.OneToOneField(Organisation, on_delete=models.PROTECT, related_name="data_key")
    wrapped = models.BinaryField()
    master_key_id = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)
    shredded_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"data key of {self.org_id}{' (shredded)' if self.shredded_at else ''}"


class KeySetStatus(models.TextChoices):
    PENDING = "pending", "Pending (not yet on the card)"
    ACTIVE = "active", "Active"
    RETIRED = "retired", "Retired"
    DESTROYED = "destroyed", "Destroyed"


class SCP(models.TextChoices):
    SCP03 = "03", "SCP03"
    SCP11 = "11", "SCP11"


class KeyAlgorithm(models.TextChoices):
    AES = "AES", "AES"


class KeySet(models.Model):
    """One key version (KVN) of a security domain: Key-ENC, Key-MAC, Key-DEK, sealed by the vault."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(Organisation, on_delete=models.PROTECT, related_name="key_sets")
    security_domain = models.ForeignKey(SecurityDomain, on_delete=models.CASCADE, related_name="key_sets")
    kvn = models.PositiveSmallIntegerField(help_text="Key version number, 1–0x7F")
    scp = models.CharField(max_length=2, choices=SCP.choices, default=SCP.SCP03)
    algorithm = models.CharField(max_length=8, choices=KeyAlgorithm.choices, default=KeyAlgorithm.AES)
    key_length = models.PositiveSmallIntegerField(help_text="Bytes per key: 16, 24 or 32")
    sealed = models.BinaryField(help_text="enc‖mac‖dek sealed by the vault for keyset:<id>")
    kcv_enc = models.CharField(max_length=6)
    kcv_mac = models.CharField(max_length=6)
    kcv_dek = models.CharField(max_length=6)
    status = models.CharField(max_length=16, choices=KeySetStatus.choices, default=KeySetStatus.PENDING)
    sequence_counter = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="The next SCP03 sequence counter the card will use (precomputed scripts)",
    )
    i_param = models.PositiveSmallIntegerField(default=0x70, help_text="SCP03 'i' parameter")
    created_at = models.DateTimeField(default=timezone.now)
    crypto_period_end = models.DateField(null=True, blank=True)

    class Meta:
        ordering = ["security_domain", "kvn"]
        constraints = [
            models.UniqueConstraint(
                fields=["security_domain", "kvn"],
                condition=~Q(status="destroyed"),
                name="keyset_kvn_unique_per_sd",
            ),
            models.CheckConstraint(condition=Q(kvn__gte=1, kvn__lte=0x7F), name="keyset_kvn_range"),
            models.CheckConstraint(condition=Q(key_length__in=[16, 24, 32]), name="keyset_key_length"),
            models.CheckConstraint(condition=Q(i_param__lte=0xFF), name="keyset_i_param_byte"),
        ]

    def __str__(self) -> str:
        return f"KVN {self.kvn:#04x} SCP{self.scp} ({self.status})"

    @property
    def kcvs(self) -> dict[str, str]:
        return {"enc": self.kcv_enc, "mac": self.kcv_mac, "dek": self.kcv_dek}
