"""Request rules of the confidential key-loading job kinds (issue 5 item 4; DESIGN §6).

Tessera never holds the provider's keys. For ``load_keys_confidential`` it parses the provider's
package only to refuse, early and with a clear code, what the card would refuse anyway (another SE,
another SD, a chain the CA did not issue or has revoked); it never sees a key. For ``run_script``
it checks the commands' form only. For ``casd_personalize`` it gathers public data: the CA's key,
the SE's CASD certificate and the CA's revoked serials.

Each ``clean_*`` returns the job's stored parameters (small and public) and, for the package, the
bytes to keep sealed with the job until the card has them.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from django.utils import timezone

from devices.models import SecureElement, SecurityDomain
from gp import gpcert, keyload
from jobs.compiler import confidential as C
from jobs.compiler.session import CompilerError
from jobs.errors import InvalidJobRequest, JobConflict
from keys import gp_ca
from keys.models import Certificate, CertificateKind

_HEX = re.compile(r"^(?:[0-9A-Fa-f]{2})+$")
MAX_REVOKED = 12  # 93 <16-byte serial> x 12 + the DGI header fits one STORE DATA block


def _hex(value: Any, field: str, *, max_bytes: int) -> bytes:
    if not isinstance(value, str) or not _HEX.match(value) or len(value) > 2 * max_bytes:
        raise InvalidJobRequest(
            f"{field} must be hex, at most {max_bytes} bytes.", fields={field: ["invalid"]}
        )
    return bytes.fromhex(value)


def _serial_hex(raw: bytes) -> str:
    """A certificate serial as ``keys.models.Certificate.serial`` stores it (lowercase hex, no zeros)."""
    return format(int.from_bytes(raw, "big"), "x")


# --- casd_personalize ------------------------------------------------------------------------------


def clean_casd_personalize(se: SecureElement, params: dict[str, Any]) -> dict[str, Any]:
    """The SE's current CASD certificate (GP form), its CA's key and revoked serials, as params.

    Errors: 409 ``no_casd_certificate`` (the CA has not certified this SE's CASD, or only with a
    revoked or expired certificate); 400 ``invalid_job`` for bad ``revoked`` serials, 409
    ``too_many_revocations`` when the list does not fit the card's one-block DGI.
    """
    extra = params.get("revoked", [])
    if set(params) - {"revoked"}:
        raise InvalidJobRequest(
            "casd_personalize takes only an optional 'revoked' list.",
            fields={k: ["unknown"] for k in set(params) - {"revoked"}},
        )
    if not isinstance(extra, list) or len(extra) > MAX_REVOKED:
        raise InvalidJobRequest(
            f"revoked must be a list of at most {MAX_REVOKED} hex serial numbers.",
            fields={"revoked": ["invalid"]},
        )
    extra_serials = [_hex(s, "revoked", max_bytes=20) for s in extra]
    now = timezone.now()
    cert = (
        Certificate.objects.select_related("issuer")
        .filter(
            kind=CertificateKind.CASD,
            secure_element=se,
            revoked_at__isnull=True,
            not_before__lte=now,
            not_after__gt=now,
        )
        .order_by("-created_at")
        .first()
    )
    if cert is None:
        raise JobConflict(
            "The Controlling Authority has not certified this secure element's CASD key (or its "
            "certificate is revoked or expired): certify it first.",
            code="no_casd_certificate",
        )
    if not cert.gp_der:
        raise JobConflict(
            "This CASD certificate has no GlobalPlatform form to store on the card.",
            code="no_casd_certificate",
        )
    ca = cert.issuer
    root_key = x509.load_der_x509_certificate(bytes(ca.root_certificate)).public_key()
    assert isinstance(root_key, ec.EllipticCurvePublicKey)
    ca_point = root_key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    revoked = {
        int(c.serial, 16).to_bytes(16, "big")
        for c in Certificate.objects.filter(issuer=ca, revoked_at__isnull=False, not_after__gt=now)
    }
    revoked |= set(extra_serials)
    if len(revoked) > MAX_REVOKED:
        raise JobConflict(
            f"The CA has {len(revoked)} unexpired revoked certificates; the card's list holds {MAX_REVOKED}.",
            code="too_many_revocations",
        )
    clean = {
        "certificate_id": str(cert.pk),
        "certificate_serial": cert.serial,
        "certificate": bytes(cert.gp_der).hex().upper(),
        "ca_point": ca_point.hex().upper(),
        "ca_identifier": ca.kloc_id.upper(),
        "revoked": sorted(s.hex().upper() for s in revoked),
    }
    try:  # the same check the compiler makes, here so a request that cannot compile is a 400
        C.casd_dgis(
            ca_point=ca_point,
            ca_identifier=bytes.fromhex(ca.kloc_id),
            certificate=bytes(cert.gp_der),
            revoked=sorted(revoked),
        )
    except CompilerError as e:
        raise JobConflict(str(e), code="casd_data_too_large") from None
    return clean


# --- load_keys_confidential ------------------------------------------------------------------------


def clean_load_keys(
    se: SecureElement, sd: SecurityDomain, params: dict[str, Any]
) -> tuple[dict[str, Any], bytes]:
    """Validate a provider's package for ``sd`` on ``se``; return (params, package bytes).

    Error codes (400): ``invalid_job`` (not hex, too long, unknown params), ``package_malformed``
    (does not parse as docs/key-loading-package.md §3), ``package_wrong_se`` (``5F20`` is not this
    SE's CASD subject identifier), ``package_wrong_sd`` (``4F`` is not ``sd``),
    ``oce_chain_invalid`` (the chain does not verify to the SE's CA root), ``oce_certificate_unknown``
    (the leaf was not issued by that CA), ``oce_certificate_revoked`` (a certificate of the chain is
    revoked).
    """
    unknown = set(params) - {"sd", "package"}
    if unknown:
        raise InvalidJobRequest(
            "load_keys_confidential takes 'sd' and 'package' only.", fields={k: ["unknown"] for k in unknown}
        )
    raw = _hex(params.get("package"), "package", max_bytes=keyload.MAX_PACKAGE_LENGTH)
    try:
        package = keyload.parse_package(raw)
    except keyload.KeyLoadError as e:
        raise InvalidJobRequest(
            f"The key-loading package does not parse: {e.message}",
            code="package_malformed",
            fields={"package": [e.code]},
        ) from None
    if package.se_id != gp_ca.se_subject_identifier(se.serial):
        raise InvalidJobRequest(
            "The key-loading package is for another secure element (5F20 differs from this SE's "
            "CASD subject identifier).",
            code="package_wrong_se",
            fields={"package": ["wrong_se"]},
        )
    if package.sd_aid != bytes.fromhex(sd.aid):
        raise InvalidJobRequest(
            f"The key-loading package is for security domain {package.sd_aid.hex().upper()}, not {sd.aid}.",
            code="package_wrong_sd",
            fields={"package": ["wrong_sd"]},
        )
    leaf_row = _check_oce_chain(se, list(package.certificates), field="package", what="package's")
    kcvs = dict(zip(("enc", "mac", "dek"), (k.hex().upper() for k in package.kcvs), strict=True))
    clean = {
        "sd": sd.aid,
        "kvn": package.kvn,
        "counter": package.counter,
        "key_length": package.key_length,
        "kcvs": kcvs,
        "package_sha256": hashlib.sha256(raw).hexdigest(),
        "package_length": len(raw),
        "oce_certificate": str(leaf_row.pk),
        "oce_org": leaf_row.subject_org.slug if leaf_row.subject_org_id else "",
    }
    return clean, raw


def _check_oce_chain(se: SecureElement, certificates: list[bytes], *, field: str, what: str) -> Certificate:
    """The OCE chain verifies to the CA that certified this SE's CASD, its leaf was issued by that
    CA as an OCE certificate, and none of it is revoked; returns the leaf's row.

    Error codes (400): ``oce_chain_invalid``, ``oce_certificate_unknown``, ``oce_certificate_revoked``;
    409 ``no_casd_certificate`` when the SE's CASD is not certified."""
    ca_cert = (
        Certificate.objects.select_related("issuer")
        .filter(kind=CertificateKind.CASD, secure_element=se)
        .order_by("-created_at")
        .first()
    )
    if ca_cert is None:
        raise JobConflict(
            f"This secure element's CASD is not certified: no CA to check the {what} chain against.",
            code="no_casd_certificate",
        )
    ca = ca_cert.issuer
    root_key = x509.load_der_x509_certificate(bytes(ca.root_certificate)).public_key()
    try:
        assert isinstance(root_key, ec.EllipticCurvePublicKey)
        leaf = gpcert.verify_chain(list(certificates), root_key)
    except gpcert.CertificateError as e:
        raise InvalidJobRequest(
            f"The {what} OCE certificate chain does not verify to the CA of this secure element: {e.message}",
            code="oce_chain_invalid",
            fields={field: [e.code]},
        ) from None
    issued = {
        c.serial: c
        for c in Certificate.objects.filter(
            issuer=ca,
            serial__in=[_serial_hex(gpcert.parse_certificate(x).serial) for x in certificates],
        )
    }
    leaf_row = issued.get(_serial_hex(leaf.serial))
    if (
        leaf_row is None
        or leaf_row.kind != CertificateKind.OCE
        or leaf.raw not in (bytes(leaf_row.der), bytes(leaf_row.gp_der))
    ):
        raise InvalidJobRequest(
            f"The {what} OCE certificate was not issued by this secure element's CA.",
            code="oce_certificate_unknown",
            fields={field: ["oce_unknown"]},
        )
    if any(c.revoked_at is not None for c in issued.values()):
        raise InvalidJobRequest(
            f"The {what} OCE certificate is revoked; ask the CA for a new one.",
            code="oce_certificate_revoked",
            fields={field: ["oce_revoked"]},
        )
    return leaf_row


# --- load_keys_scp11 -------------------------------------------------------------------------------


def clean_load_keys_scp11(se: SecureElement, sd: SecurityDomain, params: dict[str, Any]) -> dict[str, Any]:
    """Round 1 of the provider's own SCP11a session (docs/key-loading-package.md §8): its
    PERFORM SECURITY OPERATION chain and MUTUAL AUTHENTICATE, exactly those command types, at
    security level 34; the OCE chain checked as a package's is. Returns the job's params.

    Error codes (400): ``invalid_job`` (not hex, unknown params, wrong command types or level), the
    chain codes of :func:`_check_oce_chain`."""
    unknown = set(params) - {"sd", "authenticate"}
    if unknown:
        raise InvalidJobRequest(
            "load_keys_scp11 takes 'sd' and 'authenticate' only.", fields={k: ["unknown"] for k in unknown}
        )
    commands = params.get("authenticate")
    if not isinstance(commands, list) or not commands:
        raise InvalidJobRequest(
            "authenticate must be the list of hex C-APDUs from gp.scp11.HostSession.authenticate_commands().",
            fields={"authenticate": ["invalid"]},
        )
    raw = [_hex(c, f"authenticate[{i}]", max_bytes=C.MAX_COMMAND_BYTES) for i, c in enumerate(commands)]
    try:
        handshake = C.check_scp11_authenticate(raw)
    except CompilerError as e:
        raise InvalidJobRequest(
            f"authenticate: {e}", fields={"authenticate": ["not_scp11_opening"]}
        ) from None
    try:
        leaf_row = _check_oce_chain(se, handshake.certificates, field="authenticate", what="session's")
    except gpcert.CertificateError as e:  # a certificate that does not even parse
        raise InvalidJobRequest(
            f"authenticate: a certificate does not parse: {e.message}",
            code="oce_chain_invalid",
            fields={"authenticate": [e.code]},
        ) from None
    return {
        "sd": sd.aid,
        "authenticate": [c.hex().upper() for c in raw],
        "variant": handshake.variant,
        "security_level": f"{handshake.security_level:02X}",
        "oce_certificate": str(leaf_row.pk),
        "oce_org": leaf_row.subject_org.slug if leaf_row.subject_org_id else "",
    }


def clean_scp11_input(job: Any, body: dict[str, Any]) -> dict[str, Any]:
    """Round 2: ``{"commands": [INSTALL, STORE DATA], "kvn", "key_length", "kcvs": {enc, mac, dek}}``.
    The commands must address the job's SD and carry a key-set template that names exactly the
    declared KVN, length and KCVs. Returns the params to add. 400 ``invalid_job`` otherwise."""
    unknown = set(body) - {"commands", "kvn", "key_length", "kcvs"}
    if unknown:
        raise InvalidJobRequest(
            "The input takes 'commands', 'kvn', 'key_length' and 'kcvs' only.",
            fields={k: ["unknown"] for k in unknown},
        )
    commands = body.get("commands")
    if not isinstance(commands, list) or len(commands) != 2:
        raise InvalidJobRequest(
            "commands must be the two wrapped C-APDUs: INSTALL [for personalization], STORE DATA.",
            fields={"commands": ["invalid"]},
        )
    raw = [_hex(c, f"commands[{i}]", max_bytes=C.MAX_COMMAND_BYTES) for i, c in enumerate(commands)]
    try:
        control = C.check_scp11_delivery(raw, sd_aid=bytes.fromhex(job.params["sd"]))
    except CompilerError as e:
        raise InvalidJobRequest(f"commands: {e}", fields={"commands": ["not_a_delivery"]}) from None
    kcvs = body.get("kcvs")
    if (
        body.get("kvn") != control.kvn
        or body.get("key_length") != control.key_length
        or not isinstance(kcvs, dict)
        or {k: str(v).upper() for k, v in kcvs.items()} != control.kcvs_hex()
    ):
        raise InvalidJobRequest(
            "kvn, key_length and kcvs must be those of the key set the STORE DATA carries.",
            code="delivery_mismatch",
            fields={"kcvs": ["mismatch"]},
        )
    return {
        "deliver": {"commands": [c.hex().upper() for c in raw]},
        "kvn": control.kvn,
        "key_length": control.key_length,
        "kcvs": control.kcvs_hex(),
    }


# --- run_script ------------------------------------------------------------------------------------


def clean_run_script(params: dict[str, Any]) -> list[str]:
    """The provider's commands: 1..64 well-formed short C-APDUs on the basic channel, no SELECT or
    MANAGE CHANNEL, at most 16 KiB in all. 400 ``invalid_job`` with ``fields.commands`` otherwise."""
    unknown = set(params) - {"sd", "commands"}
    if unknown:
        raise InvalidJobRequest(
            "run_script takes 'sd' and 'commands' only.", fields={k: ["unknown"] for k in unknown}
        )
    commands = params.get("commands")
    if not isinstance(commands, list) or not 1 <= len(commands) <= C.MAX_RELAY_COMMANDS:
        raise InvalidJobRequest(
            f"commands must be a list of 1 to {C.MAX_RELAY_COMMANDS} hex C-APDUs.",
            fields={"commands": ["invalid"]},
        )
    out: list[str] = []
    total = 0
    for i, item in enumerate(commands):
        raw = _hex(item, f"commands[{i}]", max_bytes=C.MAX_COMMAND_BYTES)
        try:
            C.check_relay_command(raw)
        except CompilerError as e:
            raise InvalidJobRequest(
                f"commands[{i}]: {e}", fields={"commands": [f"{i}: not allowed"]}
            ) from None
        total += len(raw)
        out.append(raw.hex().upper())
    if total > C.MAX_RELAY_BYTES:
        raise InvalidJobRequest(
            f"The script has {total} bytes of commands; at most {C.MAX_RELAY_BYTES}.",
            fields={"commands": ["too_large"]},
        )
    return out
