"""Devices, their secure hardware (SE or TEE) and the Security Domains on it (DESIGN §2, §4).

Life-cycle and privilege codings follow GlobalPlatform Card Specification v2.3.1 §11.1.1–11.1.2;
``gp.commands`` holds the byte-level codecs, this module the records.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone

from tenants.models import Organisation


class DeviceKind(models.TextChoices):
    METER = "meter", "Smart meter"
    OBU = "obu", "Vehicle on-board unit"
    MEDICAL_GATEWAY = "medical_gateway", "Medical gateway"
    OTHER = "other", "Other"


class DeviceStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    SUSPENDED = "suspended", "Suspended"
    RETIRED = "retired", "Retired"


class Device(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    serial = models.CharField(max_length=64)
    kind = models.CharField(max_length=32, choices=DeviceKind.choices)
    manufacturer = models.ForeignKey(Organisation, on_delete=models.PROTECT, related_name="devices_made")
    holder = models.ForeignKey(
        Organisation, null=True, blank=True, on_delete=models.SET_NULL, related_name="devices_held"
    )
    subscriber = models.ForeignKey(
        Organisation, null=True, blank=True, on_delete=models.SET_NULL, related_name="devices_subscribed"
    )
    network_provider = models.ForeignKey(
        Organisation, null=True, blank=True, on_delete=models.SET_NULL, related_name="devices_connected"
    )
    identity_public_key = models.TextField(blank=True, help_text="PEM, ECDSA P-256")
    identity_key_id = models.CharField(
        max_length=64,
        unique=True,
        null=True,
        blank=True,
        help_text="Lowercase hex SHA-256 of the identity key's DER SubjectPublicKeyInfo",
    )
    # The manufacturer's pairing claim: the SE in this device (devices.services, pairing rule).
    se_issuer_slug = models.CharField(max_length=50, blank=True)
    se_serial = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=16, choices=DeviceStatus.choices, default=DeviceStatus.ACTIVE)
    end_of_service = models.DateField(
        null=True,
        blank=True,
        help_text="Intended end of service: key sets should stay strong enough until then (keys.policy)",
    )
    last_seen_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["serial"]
        constraints = [
            models.UniqueConstraint(
                fields=["manufacturer", "serial"], name="device_serial_unique_per_manufacturer"
            )
        ]

    def __str__(self) -> str:
        return self.serial


class SecureElementKind(models.TextChoices):
    SE = "se", "Secure Element"
    TEE = "tee", "Trusted Execution Environment"


class CardLifeCycle(models.TextChoices):
    """GP CS v2.3.1 §11.1.1: card life cycle coding."""

    OP_READY = "OP_READY", "OP_READY (01)"
    INITIALIZED = "INITIALIZED", "INITIALIZED (07)"
    SECURED = "SECURED", "SECURED (0F)"
    CARD_LOCKED = "CARD_LOCKED", "CARD_LOCKED (7F)"
    TERMINATED = "TERMINATED", "TERMINATED (FF)"


class SecureElement(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    device = models.ForeignKey(
        Device, null=True, blank=True, on_delete=models.SET_NULL, related_name="secure_elements"
    )
    kind = models.CharField(max_length=8, choices=SecureElementKind.choices, default=SecureElementKind.SE)
    issuer = models.ForeignKey(Organisation, on_delete=models.PROTECT, related_name="secure_elements_issued")
    supplier = models.ForeignKey(
        Organisation,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="secure_elements_supplied",
    )
    serial = models.CharField(max_length=64, help_text="IC serial number from CPLC, hex")
    cplc = models.CharField(max_length=200, blank=True, help_text="GET DATA 9F7F, hex")
    iin = models.CharField(max_length=32, blank=True)
    cin = models.CharField(max_length=64, blank=True)
    life_cycle = models.CharField(max_length=16, choices=CardLifeCycle.choices, default=CardLifeCycle.SECURED)
    # The issuer's pairing claim: the device this SE sits in (devices.services, pairing rule).
    device_manufacturer_slug = models.CharField(max_length=50, blank=True)
    device_serial = models.CharField(max_length=64, blank=True)
    # The CASD's key-agreement public key (generated inside the SE), from the supplier's batch;
    # the Controlling Authority certifies it (keys.handover). Public, not secret.
    casd_public_key = models.BinaryField(blank=True, default=b"", help_text="SubjectPublicKeyInfo, DER")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["serial"]
        constraints = [
            models.UniqueConstraint(fields=["issuer", "serial"], name="se_serial_unique_per_issuer")
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.serial}"


class SDLifeCycle(models.TextChoices):
    """GP CS v2.3.1 §11.1.1: security domain life cycle coding."""

    INSTALLED = "INSTALLED", "INSTALLED (03)"
    SELECTABLE = "SELECTABLE", "SELECTABLE (07)"
    PERSONALIZED = "PERSONALIZED", "PERSONALIZED (0F)"
    LOCKED = "LOCKED", "LOCKED (83)"


class SecurityDomain(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    secure_element = models.ForeignKey(
        SecureElement, on_delete=models.CASCADE, related_name="security_domains"
    )
    aid = models.CharField(max_length=32, help_text="Application identifier, hex (5–16 bytes)")
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )
    owner = models.ForeignKey(Organisation, on_delete=models.PROTECT, related_name="security_domains")
    is_isd = models.BooleanField(default=False)
    privileges = models.JSONField(default=list, help_text="Named privileges (GP CS §11.1.2)")
    life_cycle = models.CharField(
        max_length=16, choices=SDLifeCycle.choices, default=SDLifeCycle.PERSONALIZED
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-is_isd", "aid"]
        constraints = [models.UniqueConstraint(fields=["secure_element", "aid"], name="sd_aid_unique_per_se")]

    def __str__(self) -> str:
        return f"{'ISD' if self.is_isd else 'SD'} {self.aid}"
