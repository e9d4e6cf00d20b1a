"""Webhooks an organisation registers, and each delivery of an event to one of them."""

from __future__ import annotations

import uuid

from django.db import models

from tenants.models import Organisation


class Webhook(models.Model):
    """An HTTPS endpoint of ``owner`` that receives the events it subscribed to, HMAC-signed.

    ``secret_sealed`` is the signing secret sealed in the owner's vault (purpose
    ``webhook-secret:<id>``); it is shown once, at creation or rotation, and never again. After a
    rotation the previous secret also signs (a second ``v1=``) until ``previous_secret_expires_at``,
    so a receiver can switch without losing deliveries.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="webhooks")
    url = models.CharField(max_length=2000)
    description = models.CharField(max_length=200, blank=True, default="")
    # Patterns: "*", "<family>.*" or "<family>.<name>" (notifications.events.FAMILIES).
    event_types = models.JSONField(default=list)
    secret_sealed = models.BinaryField()
    secret_rotated_at = models.DateTimeField()
    previous_secret_sealed = models.BinaryField(null=True, blank=True)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True)
    active = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["owner", "active"])]

    def __str__(self) -> str:
        return f"webhook {self.url[:80]}"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"


class Delivery(models.Model):
    """One event for one webhook: attempted until a 2xx, a 410, or ``MAX_ATTEMPTS``.

    ``attempts_log`` lists each attempt (time, status code or error, duration, the backoff chosen)
    so the delivery log shows why and when it was retried. ``next_attempt_at`` is when the retry
    sweep may pick it up (a lease while an attempt runs, so a lost task is retried too).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    event_id = models.UUIDField(default=uuid.uuid4)
    event_type = models.CharField(max_length=80)
    payload = models.JSONField()
    attempts = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True, default="")
    attempts_log = models.JSONField(default=list)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "id"]
        indexes = [
            models.Index(fields=["status", "next_attempt_at"]),
            models.Index(fields=["webhook", "-created_at"]),
        ]
        verbose_name_plural = "deliveries"

    def __str__(self) -> str:
        return f"delivery {self.event_type} #{self.attempts}"
