"""Append-only, hash-chained audit events (DESIGN §5, issue 2 item 5).

Organisations are referenced by id, not by foreign key: the trail must outlive the rows it talks
about (an organisation that leaves is crypto-shredded, its history stays) and ``audit`` sits below
``tenants`` in the dependency order.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class AuditTag(models.TextChoices):
    ORG_APPLY = "org:apply", "Organisation applied"
    ORG_APPROVE = "org:approve", "Organisation approved"
    ORG_REJECT = "org:reject", "Organisation rejected"
    ORG_SUSPEND = "org:suspend", "Organisation suspended"
    ORG_REACTIVATE = "org:reactivate", "Organisation reactivated"
    MEMBER_INVITE = "member:invite", "Member invited"
    MEMBER_JOIN = "member:join", "Member joined"
    MEMBER_ROLE = "member:role", "Member role changed"
    MEMBER_REMOVE = "member:remove", "Member removed"
    INVITATION_REVOKE = "invitation:revoke", "Invitation revoked"
    MANDATE_GRANT = "mandate:grant", "Mandate granted"
    MANDATE_REVOKE = "mandate:revoke", "Mandate revoked"
    CONTRACT_CREATE = "contract:create", "Contract created"
    CONSENT_GRANT = "consent:grant", "Consent granted"
    CONSENT_REVOKE = "consent:revoke", "Consent revoked"
    CONSENT_REQUEST = "consent:request", "Consent requested"
    CONSENT_DENY = "consent:deny", "Consent denied"
    CONSENT_EXPIRE = "consent:expire", "Consent expired"
    DEVICE_REGISTER = "device:register", "Device registered"
    SE_REGISTER = "se:register", "Secure element registered"
    SD_REGISTER = "sd:register", "Security domain recorded"
    DEVICE_SUSPEND = "device:suspend", "Device suspended"
    DEVICE_REACTIVATE = "device:reactivate", "Device reactivated"
    DEVICE_PAIR = "device:pair", "Device paired with its secure element"
    DEVICE_UPDATE = "device:update", "Device details changed"
    KEYSET_IMPORT = "keyset:import", "Key set imported"
    KEYSET_GENERATE = "keyset:generate", "Key set generated"
    KEYSET_STATUS = "keyset:status", "Key set status changed"
    MASTERKEY_REGISTER = "masterkey:register", "Service master key registered"
    SESSIONKEY_DERIVE = "sessionkey:derive", "Session key derived for the master key's owner"
    WEBHOOK_CREATE = "webhook:create", "Webhook created"
    WEBHOOK_UPDATE = "webhook:update", "Webhook updated"
    WEBHOOK_DELETE = "webhook:delete", "Webhook deleted"
    WEBHOOK_ROTATE = "webhook:rotate_secret", "Webhook secret rotated"
    WEBHOOK_DISABLE = "webhook:disable", "Webhook disabled by its receiver (410)"
    VAULT_SHRED = "vault:shred", "Organisation data key shredded"
    JOB_REQUEST = "job:request", "Job requested"
    JOB_STATE = "job:state", "Job changed state"
    JOB_STEP = "job:step", "Job step reported"
    JOB_CANCEL = "job:cancel", "Job canceled"
    INVENTORY_RECONCILE = "inventory:reconcile", "Card inventory reconciled"
    CA_CREATE = "ca:create", "Certificate authority created"
    CERTIFICATE_ISSUE = "certificate:issue", "Certificate issued"
    CERTIFICATE_REVOKE = "certificate:revoke", "Certificate revoked"
    CRL_PUBLISH = "crl:publish", "Revocation list published"
    CONTRACT_END = "contract:end", "Contract ended"
    SWITCH_REQUEST = "switch:request", "Provider switch requested"
    SWITCH_STEP = "switch:step", "Provider switch step started"
    SWITCH_STATE = "switch:state", "Provider switch changed state"
    CAMPAIGN_CREATE = "campaign:create", "Switch campaign created"
    CAMPAIGN_STATE = "campaign:state", "Switch campaign changed state"


class AuditEvent(models.Model):
    seq = models.BigAutoField(primary_key=True)
    created_at = models.DateTimeField()
    actor_user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    actor_username = models.CharField(max_length=150, blank=True)
    acting_org_id = models.UUIDField(null=True, blank=True)
    on_behalf_of_id = models.UUIDField(null=True, blank=True)
    tag = models.CharField(max_length=64, choices=AuditTag.choices)
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_repr = models.CharField(max_length=200, blank=True)
    details = models.JSONField(default=dict, blank=True)
    concerned_org_ids = models.JSONField(default=list, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["-seq"]

    def __str__(self) -> str:
        return f"#{self.seq} {self.tag} {self.target_repr}"


class AuditEventOrg(models.Model):  # noqa: DJ008
    """Index row: event ``event`` concerns organisation ``org_id`` (who may read it)."""

    event = models.ForeignKey(AuditEvent, on_delete=models.CASCADE, related_name="org_links")
    org_id = models.UUIDField(db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["event", "org_id"], name="audit_event_org_unique")]


class AuditChainHead(models.Model):  # noqa: DJ008
    """A single row holding the newest hash; writers lock it so the chain stays linear."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    last_seq = models.BigIntegerField(default=0)
    last_hash = models.CharField(max_length=64)
