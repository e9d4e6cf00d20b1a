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


class KeyCustody(models.TextChoices):
    """Who holds a key set's key material besides the card."""

    PORTAL = "portal", "Portal (sealed in the owner's vault)"
    PROVIDER = "provider", "Provider (loaded confidentially; Tessera never held the keys)"


class KeySet(models.Model):
    """One key version (KVN) of a security domain: Key-ENC, Key-MAC, Key-DEK, sealed by the vault.

    ``custody`` ``provider``: the keys were loaded with a confidential key-loading package
    (``docs/key-loading-package.md``); only the SE and the provider hold them, ``sealed`` is empty
    and the row records KVN, algorithm, length and KCVs only. Workers never open such a set.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(Organisation, on_delete=models.PROTECT, related_name="key_sets")
    security_domain = models.ForeignKey(SecurityDomain, on_delete=models.CASCADE, related_name="key_sets")
    kvn = models.PositiveSmallIntegerField(help_text="Key version number, 1–0x7F")
    scp = models.CharField(max_length=2, choices=SCP.choices, default=SCP.SCP03)
    algorithm = models.CharField(max_length=8, choices=KeyAlgorithm.choices, default=KeyAlgorithm.AES)
    key_length = models.PositiveSmallIntegerField(help_text="Bytes per key: 16, 24 or 32")
    sealed = models.BinaryField(help_text="enc‖mac‖dek sealed by the vault for keyset:<id>")
    custody = models.CharField(max_length=8, choices=KeyCustody.choices, default=KeyCustody.PORTAL)
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


class MasterKeyStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    RETIRED = "retired", "Retired (replaced; its sealed key is wiped)"


class ServiceMasterKey(models.Model):
    """A provider SD's service master key (docs/session-keys.md): the SE derives session keys for
    on-device applications from it; the provider derives the same ones on its back end.

    ``custody`` ``portal``: the owner deposited a copy in its vault (``sealed``, purpose
    ``masterkey:<id>``) so its back end may ask the session-keys API; ``provider``: only the SE
    and the provider's tooling hold it, the row records its KCV only and the API answers 409.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(Organisation, on_delete=models.PROTECT, related_name="service_master_keys")
    security_domain = models.ForeignKey(
        SecurityDomain, on_delete=models.CASCADE, related_name="service_master_keys"
    )
    kvn = models.PositiveSmallIntegerField(default=0x72, help_text="Key version on the card (KID 01)")
    key_length = models.PositiveSmallIntegerField(help_text="16, 24 or 32 bytes")
    custody = models.CharField(max_length=8, choices=KeyCustody.choices, default=KeyCustody.PORTAL)
    sealed = models.BinaryField(blank=True, default=b"", help_text="The key sealed for masterkey:<id>")
    kcv = models.CharField(max_length=6)
    status = models.CharField(max_length=16, choices=MasterKeyStatus.choices, default=MasterKeyStatus.ACTIVE)
    created_at = models.DateTimeField(default=timezone.now)
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["security_domain"], condition=Q(status="active"), name="master_key_one_active_per_sd"
            ),
            models.CheckConstraint(condition=Q(kvn__gte=1, kvn__lte=0x7F), name="master_key_kvn_range"),
            models.CheckConstraint(condition=Q(key_length__in=[16, 24, 32]), name="master_key_length"),
        ]

    def __str__(self) -> str:
        return f"service master key {self.kcv} ({self.custody}, {self.status})"


# --- the Controlling Authority's certificate authority (issue 5 item 1) -----------------------


class CAStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    RETIRED = "retired", "Retired"


class CertificateAuthority(models.Model):
    """A Controlling Authority's root: a P-256 key pair and its self-signed X.509 certificate.

    The private key is never in a column in clear: ``sealed_private_key`` is the vault's blob for
    ``ca-root:<id>`` in the owner's vault (``signer_ref`` = ``vault``), or empty when the key lives
    in a token (``signer_ref`` = ``pkcs11:<label>``). ``kloc_id`` (hex) is the key's identifier
    (SHA-1 of the public point, RFC 5280 §4.2.1.2 method 1): the X.509 subject/authority key
    identifier and GlobalPlatform's CA-KLOC identifier (tag 42 of a ``7F21`` certificate).
    The root certificate and the published CRL are public.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(Organisation, on_delete=models.PROTECT, related_name="certificate_authorities")
    name = models.CharField(max_length=120)
    status = models.CharField(max_length=16, choices=CAStatus.choices, default=CAStatus.ACTIVE)
    signer_ref = models.CharField(max_length=200, default="vault")
    sealed_private_key = models.BinaryField(blank=True, default=b"")
    public_key = models.BinaryField(help_text="SubjectPublicKeyInfo, DER")
    kloc_id = models.CharField(max_length=40, unique=True)
    root_certificate = models.BinaryField(help_text="Self-signed X.509, DER")
    not_before = models.DateTimeField()
    not_after = models.DateTimeField()
    crl = models.BinaryField(blank=True, default=b"", help_text="The published CRL, DER")
    crl_number = models.PositiveBigIntegerField(default=0)
    crl_next_update = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["owner"], condition=Q(status="active"), name="ca_one_active_per_owner"
            )
        ]

    def __str__(self) -> str:
        return self.name


class CertificateKind(models.TextChoices):
    CASD = "casd", "CASD (secure element key agreement)"
    OCE = "oce", "Off-card entity"


class RevocationReason(models.TextChoices):
    """RFC 5280 §5.3.1 CRLReason values a Controlling Authority records."""

    UNSPECIFIED = "unspecified", "Unspecified"
    KEY_COMPROMISE = "key_compromise", "Key compromise"
    AFFILIATION_CHANGED = "affiliation_changed", "Affiliation changed"
    SUPERSEDED = "superseded", "Superseded"
    CESSATION_OF_OPERATION = "cessation_of_operation", "Cessation of operation"
    PRIVILEGE_WITHDRAWN = "privilege_withdrawn", "Privilege withdrawn"


class Certificate(models.Model):
    """A certificate the CA issued: a CASD's key-agreement key, or an off-card entity's key.

    The CA never holds the matching private key: a CASD key is generated inside the SE, an OCE
    key by the provider's tooling, which proves possession with a CSR.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    issuer = models.ForeignKey(CertificateAuthority, on_delete=models.PROTECT, related_name="certificates")
    kind = models.CharField(max_length=8, choices=CertificateKind.choices)
    subject_org = models.ForeignKey(
        Organisation, null=True, blank=True, on_delete=models.PROTECT, related_name="oce_certificates"
    )
    secure_element = models.ForeignKey(
        "devices.SecureElement",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="casd_certificates",
    )
    serial = models.CharField(max_length=40, help_text="Serial number, lowercase hex")
    subject = models.CharField(max_length=400, help_text="RFC 4514 subject")
    public_key = models.BinaryField(help_text="SubjectPublicKeyInfo, DER")
    der = models.BinaryField(help_text="X.509, DER")
    gp_der = models.BinaryField(blank=True, default=b"", help_text="GlobalPlatform 7F21 form, when emitted")
    fingerprint = models.CharField(max_length=64, help_text="SHA-256 of the DER, lowercase hex")
    not_before = models.DateTimeField()
    not_after = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    revocation_reason = models.CharField(max_length=32, choices=RevocationReason.choices, blank=True)
    on_card_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="CASD: when a casd_personalize job confirmed the SE holds this certificate",
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["issuer", "serial"], name="certificate_serial_unique_per_ca"),
            models.CheckConstraint(
                condition=(Q(kind="casd", secure_element__isnull=False, subject_org__isnull=True))
                | (Q(kind="oce", subject_org__isnull=False, secure_element__isnull=True)),
                name="certificate_subject_matches_kind",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} certificate {self.serial}"

    def status_at(self, when: object = None) -> str:
        now = when or timezone.now()
        if self.revoked_at is not None:
            return "revoked"
        if now < self.not_before:  # type: ignore[operator]
            return "not_yet_valid"
        if now >= self.not_after:  # type: ignore[operator]
            return "expired"
        return "valid"

    @property
    def status(self) -> str:
        return self.status_at()


# --- SE issuers' import keys for the manufacturing hand-over (issue 5 item 6) ------------------


class ImportKeyStatus(models.TextChoices):
    CURRENT = "current", "Current (published; new batches wrap to it)"
    RETIRING = "retiring", "Retiring (still opens batches in flight)"
    RETIRED = "retired", "Retired (private key destroyed)"


class ImportKey(models.Model):
    """An SE issuer's P-256 import key: suppliers wrap ISD key sets to its public half.

    ``sealed_private_key`` is the vault's blob for ``import-key:<id>`` in the owner's vault, emptied
    when the key is retired. ``fingerprint`` is the lowercase hex SHA-256 of ``public_key`` (DER
    SubjectPublicKeyInfo), the import key id a wrapped key set names (``gp.card.manufacture``).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(Organisation, on_delete=models.PROTECT, related_name="import_keys")
    public_key = models.BinaryField(help_text="SubjectPublicKeyInfo, DER (EC P-256)")
    fingerprint = models.CharField(max_length=64, unique=True)
    sealed_private_key = models.BinaryField(blank=True, default=b"")
    status = models.CharField(max_length=16, choices=ImportKeyStatus.choices, default=ImportKeyStatus.CURRENT)
    created_at = models.DateTimeField(default=timezone.now)
    superseded_at = models.DateTimeField(null=True, blank=True)
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["owner"], condition=Q(status="current"), name="import_key_one_current_per_owner"
            )
        ]

    def __str__(self) -> str:
        return f"import key {self.fingerprint[:16]} ({self.status})"
