"""What the provider does, as plain functions over a :class:`~sdk.store.KeyStore` and an
:class:`~sdk.client.ApiClient`. The CLI (:mod:`sdk.cli`) is a thin layer over these.

Trust: the only things taken on faith are the CA root the provider pinned (by fingerprint, checked
out of band) and its own store. Everything from the server is verified before use: the SE's CASD
certificate chains to the pinned root (and is not on the CA's signed CRL), the OCE certificate the
CA returns certifies the store's key, a receipt matches the one computed when the package was
built, and every secured response carries a valid R-MAC.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from asn1crypto import csr as acsr
from asn1crypto import keys as akeys
from asn1crypto import pem as apem
from asn1crypto import x509 as ax509
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gp import gpcert, keydelivery, keyload, scp11
from gp.apdu import ResponseAPDU
from gp.commands import AID, DGI, InitializeUpdate, InstallForPersonalization, StoreData, encode_dgis
from gp.commands.store_data import DataStructure
from gp.errors import GPError
from gp.scp03 import (
    C_DECRYPTION,
    C_MAC,
    I_PSEUDO_RANDOM,
    I_R_ENCRYPTION,
    I_R_MAC,
    R_ENCRYPTION,
    R_MAC,
    HostSession,
    SCP03Error,
    StaticKeys,
    kdf,
    pseudo_random_card_challenge,
)
from sdk.client import ApiClient
from sdk.errors import JobFailed, SdkError, UsageError, VerificationError
from sdk.store import KEYSET_ACTIVE, KEYSET_FAILED, KeySetRecord, KeyStore

__all__ = [
    "SecureElementInfo",
    "certificate_request",
    "csr_pem",
    "fetch_roots",
    "load_keys",
    "load_keys_online",
    "parse_aid",
    "parse_apdu",
    "personalize",
    "pin_root",
    "run_script",
    "verify_receipt",
    "verify_se",
]

JOB_LOAD_KEYS = "load_keys_confidential"
JOB_RUN_SCRIPT = "run_script"
JOB_LOAD_KEYS_SCP11 = "load_keys_scp11"
CASD_KVN = 0x01  # the ISD's SCP11 key version (PK.SD.ECKA = the CASD key; docs/softcard-casd.md)
CA_KLOC_KID, CA_KLOC_KVN = 0x10, 0x01  # where casd_personalize puts the CA's key on the card
SCP11_LEVEL = 0x34  # C-MAC + R-MAC: Tessera checks the target SD; the keys travel under S-DEK
DEFAULT_KVN = 0x30
_HEX = re.compile(r"^(?:[0-9A-Fa-f]{2})+$")
_I_S16 = 0x01


# --- input ---------------------------------------------------------------------------------------


def parse_hex(value: str, what: str, *, min_len: int = 1, max_len: int = 65536) -> bytes:
    text = (value or "").replace(" ", "").replace(":", "")
    if not _HEX.match(text):
        raise UsageError(f"{what} must be hex (an even number of 0-9A-F), got {value!r}", code="bad_hex")
    raw = bytes.fromhex(text)
    if not min_len <= len(raw) <= max_len:
        raise UsageError(f"{what} must be {min_len} to {max_len} bytes, got {len(raw)}", code="bad_length")
    return raw


def parse_aid(value: str, what: str = "AID") -> bytes:
    return parse_hex(value, what, min_len=5, max_len=16)


def parse_apdu(value: str) -> bytes:
    raw = parse_hex(value, "APDU", min_len=4, max_len=261)
    try:
        from gp.apdu import CommandAPDU

        CommandAPDU.parse(raw)
    except GPError as e:
        raise UsageError(f"APDU {value!r} does not parse: {e}", code="bad_apdu") from None
    return raw


def fingerprint(der: bytes) -> str:
    return hashlib.sha256(bytes(der)).hexdigest()


def _spki(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _point(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


# --- certificates ------------------------------------------------------------------------------


def csr_pem(store: KeyStore, common_name: str = "tessera-provider") -> str:
    """A PKCS#10 CSR for the OCE key, signed by it (inside the token for PKCS#11)."""
    info = acsr.CertificationRequestInfo(
        {
            "version": "v1",
            "subject": ax509.Name.build({"common_name": common_name}),
            "subject_pk_info": akeys.PublicKeyInfo.load(_spki(store.oce_public_key())),
            "attributes": [],
        }
    )
    request = acsr.CertificationRequest(
        {
            "certification_request_info": info,
            "signature_algorithm": {"algorithm": "sha256_ecdsa"},
            "signature": store.sign(info.dump()),
        }
    )
    return apem.armor("CERTIFICATE REQUEST", request.dump()).decode()


def _pem_chain(items: Any) -> list[bytes]:
    if not isinstance(items, list):
        raise VerificationError("the server's certificate chain is not a list", code="bad_chain")
    out = []
    for text in items:
        try:
            out.append(
                x509.load_pem_x509_certificate(str(text).encode()).public_bytes(serialization.Encoding.DER)
            )
        except ValueError:
            raise VerificationError(
                "a certificate of the server's chain does not parse", code="bad_chain"
            ) from None
    return out


def _root_key(store: KeyStore) -> tuple[bytes, ec.EllipticCurvePublicKey]:
    der = store.pinned_root()
    try:
        key = x509.load_der_x509_certificate(der).public_key()
    except ValueError:
        raise SdkError("the pinned CA root does not parse; pin it again", code="store_corrupt") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise SdkError("the pinned CA root has no EC key", code="store_corrupt")
    return der, key


def _verify_detail_chain(store: KeyStore, detail: dict[str, Any], what: str) -> tuple[bytes, gpcert.CertInfo]:
    """Verify an API certificate detail (X.509 leaf, chain [root, …, leaf]) to the pinned root."""
    root_der, root_key = _root_key(store)
    try:
        leaf = bytes.fromhex(str(detail.get("der_hex", "")))
    except ValueError:
        raise VerificationError(f"the {what} from the server is not hex", code="bad_chain") from None
    chain = _pem_chain(detail.get("chain_pem", []))
    if not chain or chain[-1] != leaf:
        chain.append(leaf)
    if chain[0] == root_der:
        chain = chain[1:]
    elif len(chain) > 1:
        raise VerificationError(
            f"the {what} chains to a CA root other than the pinned one (SHA-256 {fingerprint(chain[0])})",
            code="wrong_root",
        )
    try:
        info = gpcert.verify_chain(chain, root_key)
    except GPError as e:
        raise VerificationError(
            f"the {what} does not verify to the pinned root: {e}", code="bad_chain"
        ) from None
    return leaf, info


def _check_crl(client: ApiClient, store: KeyStore, ca_id: str, serial: str, what: str) -> bool:
    """Whether the CA's CRL (signed by the pinned root) was checked; raises if ``serial`` is on it."""
    if not ca_id:
        return False
    _root_der, root_key = _root_key(store)
    crl = x509.load_der_x509_crl(client.crl(ca_id))
    if not crl.is_signature_valid(root_key):  # type: ignore[arg-type]
        raise VerificationError("the CA's CRL is not signed by the pinned root", code="bad_crl")
    try:
        number = int(serial, 16)
    except ValueError:
        return False
    if crl.get_revoked_certificate_by_serial_number(number) is not None:
        raise VerificationError(f"the {what} (serial {serial}) is revoked", code="revoked")
    return True


def certificate_request(store: KeyStore, client: ApiClient, *, common_name: str = "") -> dict[str, Any]:
    """CSR → ``POST certificates/csr/`` → check it certifies our key → store it (and check its chain
    when a root is pinned)."""
    detail = client.request_certificate(csr_pem(store, common_name or f"{client.config.org} OCE"))
    try:
        cert = x509.load_der_x509_certificate(bytes.fromhex(str(detail.get("der_hex", ""))))
    except ValueError:
        raise VerificationError(
            "the CA answered a certificate that does not parse", code="bad_certificate"
        ) from None
    if _spki(cert.public_key()) != _spki(store.oce_public_key()):  # type: ignore[arg-type]
        raise VerificationError("the CA answered a certificate for another key", code="wrong_key")
    gp_hex = detail.get("gp_hex")
    if gp_hex:
        gp = gpcert.parse_certificate(bytes.fromhex(gp_hex))
        if _point(gp.public_key) != _point(store.oce_public_key()):
            raise VerificationError("the CA's GP certificate is for another key", code="wrong_key")
    store.save_certificate(detail)
    verified = False
    try:
        store.pinned_root()
    except SdkError:
        pass
    else:
        _verify_detail_chain(store, detail, "OCE certificate")
        verified = True
    return {
        "certificate": detail.get("id"),
        "serial": detail.get("serial"),
        "subject": detail.get("subject"),
        "fingerprint_sha256": fingerprint(cert.public_bytes(serialization.Encoding.DER)),
        "not_after": detail.get("not_after"),
        "gp_form": bool(gp_hex),
        "chain_verified": verified,
    }


def fetch_roots(client: ApiClient) -> list[dict[str, Any]]:
    """The CA roots the server publishes, with the SHA-256 of the DER we actually received."""
    out = []
    for ca in client.cas():
        der = client.ca_root(str(ca.get("id", "")))
        out.append(
            {"id": ca.get("id"), "name": ca.get("name"), "fingerprint_sha256": fingerprint(der), "der": der}
        )
    return out


def pin_root(store: KeyStore, der: bytes, *, expected_fingerprint: str | None = None) -> dict[str, Any]:
    """Pin a CA root (DER or PEM bytes); with ``expected_fingerprint`` it must match."""
    raw = bytes(der)
    if raw.lstrip().startswith(b"-----BEGIN"):
        try:
            raw = x509.load_pem_x509_certificate(raw).public_bytes(serialization.Encoding.DER)
        except ValueError:
            raise UsageError("the root file is PEM but not a certificate", code="bad_root") from None
    try:
        cert = x509.load_der_x509_certificate(raw)
        key = cert.public_key()
    except ValueError:
        raise UsageError("the root is not an X.509 certificate (DER or PEM)", code="bad_root") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise UsageError("the root certificate has no EC key", code="bad_root")
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, Exception):  # noqa: BLE001 - any failure: not a self-signed root
        raise UsageError("the root certificate is not self-signed", code="bad_root") from None
    fp = fingerprint(raw)
    if expected_fingerprint is not None:
        want = expected_fingerprint.replace(":", "").replace(" ", "").lower()
        if not hmac.compare_digest(want, fp):
            raise VerificationError(
                f"the root's SHA-256 fingerprint is {fp}, not the one given; nothing pinned",
                code="fingerprint_mismatch",
            )
    store.pin_root(raw)
    return {"pinned": True, "fingerprint_sha256": fp, "subject": cert.subject.rfc4514_string()}


# --- secure elements ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SecureElementInfo:
    device: str
    secure_element: str  # the server's id (UUID)
    serial: str
    se_id: bytes  # the CASD certificate's subject identifier: what the package names
    casd_public_key: ec.EllipticCurvePublicKey
    certificate: str
    crl_checked: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "secure_element": self.secure_element,
            "serial": self.serial,
            "se_id": self.se_id.hex().upper(),
            "casd_public_key": _point(self.casd_public_key).hex().upper(),
            "casd_fingerprint_sha256": fingerprint(_spki(self.casd_public_key)),
            "certificate": self.certificate,
            "chain_verified": True,
            "crl_checked": self.crl_checked,
        }


def _se_subject_identifier(serial: str) -> bytes:
    """As the CA does (keys.gp_ca.se_subject_identifier): the serial's bytes when hex, else UTF-8."""
    text = serial.strip()
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    return raw or text.encode()


def _pick_se(device: dict[str, Any], sd: bytes | None, se: str | None) -> dict[str, Any]:
    ses = [s for s in device.get("secure_elements", []) if isinstance(s, dict)]
    if se:
        ses = [s for s in ses if str(s.get("id")) == se]
    elif sd is not None and len(ses) > 1:
        with_sd = [
            s
            for s in ses
            if any(str(d.get("aid", "")).upper() == sd.hex().upper() for d in s.get("security_domains", []))
        ]
        ses = with_sd or ses
    if len(ses) != 1:
        raise UsageError(
            f"device {device.get('id')} has {len(ses)} matching secure elements; name one with --se",
            code="which_se",
        )
    return ses[0]


def verify_se(
    store: KeyStore, client: ApiClient, device_id: str, *, sd: bytes | None = None, se: str | None = None
) -> SecureElementInfo:
    """Fetch the SE's CASD certificate and verify it to the pinned root; take PK.CASD and the SE id."""
    device = client.device(device_id)
    se_row = _pick_se(device, sd, se)
    detail = client.casd_certificate(str(se_row["id"]))
    if detail.get("kind") not in (None, "casd"):
        raise VerificationError(
            "the server answered a certificate that is not a CASD certificate", code="wrong_kind"
        )
    leaf, info = _verify_detail_chain(store, detail, "CASD certificate")
    cert = x509.load_der_x509_certificate(leaf)
    bound = [a.value for a in cert.subject.get_attributes_for_oid(x509.NameOID.SERIAL_NUMBER)]
    if bound and str(se_row["id"]) not in bound:
        raise VerificationError("the CASD certificate is bound to another secure element", code="wrong_se")
    se_id = b""
    gp_hex = detail.get("gp_hex")
    if gp_hex:
        try:
            gp_info = gpcert.verify_chain([bytes.fromhex(gp_hex)], _root_key(store)[1])
        except (GPError, ValueError) as e:
            raise VerificationError(
                f"the CASD's GP certificate does not verify to the pinned root: {e}", code="bad_chain"
            ) from None
        if _point(gp_info.public_key) != _point(info.public_key):
            raise VerificationError(
                "the CASD's GP and X.509 certificates certify different keys", code="bad_chain"
            )
        se_id = gp_info.subject_identifier
    if not se_id:
        cns = [a.value for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
        if not cns:
            raise VerificationError("the CASD certificate names no SE", code="bad_certificate")
        se_id = _se_subject_identifier(str(cns[0]))
    ca_id = str((detail.get("issuer") or {}).get("id") or detail.get("ca") or "")
    crl_checked = _check_crl(client, store, ca_id, str(detail.get("serial", "")), "CASD certificate")
    return SecureElementInfo(
        device=device_id,
        secure_element=str(se_row["id"]),
        serial=str(se_row.get("serial", "")),
        se_id=se_id,
        casd_public_key=info.public_key,
        certificate=str(detail.get("id", "")),
        crl_checked=crl_checked,
    )


# --- key loading -------------------------------------------------------------------------------


def _oce_chain(store: KeyStore, fmt: str) -> list[bytes]:
    detail = store.certificate()
    _verify_detail_chain(store, detail, "OCE certificate")
    if fmt == "gp":
        if not detail.get("gp_hex"):
            raise UsageError(
                "the CA issued no GP (7F21) form of the OCE certificate; use --chain-format x509",
                code="no_gp_form",
            )
        return [bytes.fromhex(detail["gp_hex"])]
    chain = _pem_chain(detail.get("chain_pem", []))
    leaf = bytes.fromhex(detail["der_hex"])
    # the card holds the CA's key, not its certificate: the root is not sent
    inner = [c for c in chain if c != store.pinned_root() and c != leaf]
    return [*inner, leaf]


def _job_result(job: dict[str, Any]) -> dict[str, Any]:
    result = job.get("result")
    if isinstance(result, dict):
        return result
    for step in reversed(job.get("steps", []) or []):
        outcome = step.get("outcome") if isinstance(step, dict) else None
        if isinstance(outcome, dict) and outcome:
            return outcome
    return {}


def _sd_key_set_kvn(device: dict[str, Any], se_uuid: str, sd: bytes) -> int | None:
    for s in device.get("secure_elements", []):
        if str(s.get("id")) != se_uuid:
            continue
        for d in s.get("security_domains", []):
            if str(d.get("aid", "")).upper() == sd.hex().upper():
                sets = [k for k in d.get("key_sets", []) if isinstance(k, dict) and "kvn" in k]
                if sets:
                    kvn = sets[-1]["kvn"]
                    return int(kvn, 16) if isinstance(kvn, str) else int(kvn)
    return None


def _load_target(
    store: KeyStore,
    client: ApiClient,
    *,
    device_id: str,
    sd: bytes,
    kvn: int | None,
    key_length: int,
    rotate: bool,
    se: str | None,
    chain_format: str,
) -> tuple[SecureElementInfo, str, str, list[bytes], int]:
    """What both ways of loading keys start from: checked arguments, the SE verified to the pinned
    root, our OCE chain and the key version to load."""
    if key_length not in (16, 24, 32):
        raise UsageError("--key-length must be 16, 24 or 32", code="bad_key_length")
    if kvn is not None and not 1 <= kvn <= 0x7F:
        raise UsageError("--kvn must be 1 to 127 (01 to 7F)", code="bad_kvn")
    info = verify_se(store, client, device_id, sd=sd, se=se)
    chain = _oce_chain(store, chain_format)
    kvn = _choose_kvn(store, client, info, device_id=device_id, sd=sd, kvn=kvn, rotate=rotate)
    return info, info.se_id.hex().upper(), sd.hex().upper(), chain, kvn


def load_keys(
    store: KeyStore,
    client: ApiClient,
    *,
    device_id: str,
    sd: bytes,
    kvn: int | None = None,
    key_length: int = 16,
    rotate: bool = False,
    se: str | None = None,
    chain_format: str = "gp",
    timeout: float = 300.0,
) -> dict[str, Any]:
    """Generate a key set, build its package for this SE, submit it as a job, verify the receipt.

    The key set is stored (sealed) before anything leaves this process; it ends ``active`` when the
    receipt verifies and ``failed`` otherwise (kept, so nothing is lost if the card did install it).
    """
    info, se_hex, sd_hex, chain, kvn = _load_target(
        store, client, device_id=device_id, sd=sd, kvn=kvn, key_length=key_length, rotate=rotate, se=se,
        chain_format=chain_format,
    )  # fmt: skip
    rec, keys = store.new_key_set(se_id=se_hex, sd=sd_hex, kvn=kvn, key_length=key_length, device=device_id)
    rec.counter = store.next_counter(se_hex, sd_hex)
    built = keyload.build_package_with_receipt(
        casd_public_key=info.casd_public_key,
        se_id=info.se_id,
        sd_aid=sd,
        kvn=kvn,
        keys=keys,
        counter=rec.counter,
        oce_private_key=store.oce_key(),
        oce_certificates=chain,
    )
    del keys
    rec.expected_receipt = built.expected_receipt.hex().upper()
    store.save_key_set(rec)
    try:
        job = client.submit_job(
            device_id, JOB_LOAD_KEYS, {"sd": sd_hex, "package": built.package.hex().upper()}
        )
    except SdkError as e:
        _fail(store, rec, e.code)
        raise
    rec.job = str(job.get("id", ""))
    store.save_key_set(rec)
    try:
        job = client.wait_job(rec.job, timeout=timeout)
        result = _job_result(job)
        receipt = parse_hex(str(result.get("receipt", "")), "the job's receipt", min_len=1, max_len=64)
        if len(receipt) == 18 and receipt[:2] == b"\x86\x10":
            receipt = keyload.parse_receipt_response(receipt)
        try:
            keyload.verify_receipt(receipt, expected_receipt=built.expected_receipt)
        except keyload.KeyLoadError:
            raise VerificationError(
                "the receipt does not match: the card did not confirm these keys", code="receipt_mismatch"
            ) from None
    except SdkError as e:
        _fail(store, rec, e.code)
        raise
    rec.status = KEYSET_ACTIVE
    rec.error = ""
    rec.scp03_counter = None  # learnt on the first session
    store.save_key_set(rec)
    return {"job": rec.job, "receipt_verified": True, "se": info.to_json(), "key_set": rec.public()}


def _choose_kvn(
    store: KeyStore,
    client: ApiClient,
    info: SecureElementInfo,
    *,
    device_id: str,
    sd: bytes,
    kvn: int | None,
    rotate: bool,
) -> int:
    """The given KVN; for a rotation the next after the store's active ones; else the SD's current."""
    if kvn is not None:
        return kvn
    se_hex, sd_hex = info.se_id.hex().upper(), sd.hex().upper()
    active = [
        r for r in store.key_sets() if r.se_id == se_hex and r.sd == sd_hex and r.status == KEYSET_ACTIVE
    ]
    if rotate:
        if not active:
            raise UsageError(
                "no active key set to rotate for this SE and SD; use `keys load`",
                code="nothing_to_rotate",
            )
        return max(r.kvn for r in active) % 0x7F + 1
    current = _sd_key_set_kvn(client.device(device_id), info.secure_element, sd)
    return current if current is not None else DEFAULT_KVN


def load_keys_online(
    store: KeyStore,
    client: ApiClient,
    *,
    device_id: str,
    sd: bytes,
    kvn: int | None = None,
    key_length: int = 16,
    rotate: bool = False,
    se: str | None = None,
    chain_format: str = "gp",
    timeout: float = 300.0,
) -> dict[str, Any]:
    """Load a key set into an online device's SD over the provider's own SCP11a session
    (``load_keys_scp11``, docs/key-loading-package.md §8), in two rounds:

    1. the PERFORM SECURITY OPERATION chain (our OCE certificates) and MUTUAL AUTHENTICATE
       (a fresh ephemeral key) go out as the job; the card's answer comes back while the job awaits
       input; its receipt must verify (this SE's certified CASD key, this session);
    2. INSTALL [for personalization] of the SD and the key-set STORE DATA (keys under AES-KW with the
       session's S-DEK), wrapped in the session, go back as the job's input; the card's answer
       (KVN and KCVs) must carry a valid R-MAC and name exactly this key set.

    The key set is stored (sealed) before anything leaves this process and ends ``active`` only
    when step 2 verifies (``failed`` otherwise). The OCE key must be able to do ECDH: a PKCS#11
    store's signing-only key cannot (``pkcs11_mechanism``)."""
    info, se_hex, sd_hex, chain, kvn = _load_target(
        store, client, device_id=device_id, sd=sd, kvn=kvn, key_length=key_length, rotate=rotate, se=se,
        chain_format=chain_format,
    )  # fmt: skip
    # Two sessions from one ephemeral key: one wraps, its twin checks each R-MAC in its place.
    ephemeral = ec.generate_private_key(ec.SECP256R1())
    session_args: dict[str, Any] = {
        "sd_public_key": info.casd_public_key,
        "key_version": CASD_KVN,
        "key_id": scp11.KID["a"],
        "oce_private_key": store.oce_key(),
        "oce_certificates": chain,
        "oce_key_version": CA_KLOC_KVN,
        "oce_key_id": CA_KLOC_KID,
        "security_level": SCP11_LEVEL,
        "ephemeral_private_key": ephemeral,
    }
    host, checker = scp11.HostSession("a", **session_args), scp11.HostSession("a", **session_args)
    opening = host.authenticate_commands()
    checker.authenticate_commands()
    job = client.submit_job(
        device_id, JOB_LOAD_KEYS_SCP11, {"sd": sd_hex, "authenticate": [c.hex().upper() for c in opening]}
    )
    job_id = str(job.get("id", ""))
    job = client.wait_job(job_id, timeout=timeout, until=("awaiting_input",))
    answers = _job_result(job).get("authenticate")
    if not isinstance(answers, list) or len(answers) != len(opening):
        raise SdkError("the job's result does not hold the card's answers to the opening", code="bad_result")
    try:
        answer = bytes.fromhex(str(answers[-1]))
        host.complete(answer)
        checker.complete(answer)
    except (ValueError, scp11.SCP11Error) as e:
        client.cancel_job(job_id)
        raise VerificationError(f"the SCP11a session does not verify: {e}", code="receipt_mismatch") from None
    rec, keys = store.new_key_set(se_id=se_hex, sd=sd_hex, kvn=kvn, key_length=key_length, device=device_id)
    rec.job = job_id
    rec.counter = 0  # no package counter: replay is impossible with fresh ephemeral keys
    store.save_key_set(rec)
    plain = keydelivery.delivery_commands(sd_aid=sd, kvn=kvn, keys=keys, dek=host.dek)
    del keys
    wrapped = [host.wrap(c) for c in plain]
    kcvs = dict(zip(("enc", "mac", "dek"), rec.kcvs, strict=True))
    try:
        client.job_input(
            job_id,
            {
                "commands": [c.hex().upper() for c in wrapped],
                "kvn": kvn,
                "key_length": key_length,
                "kcvs": kcvs,
            },
        )
        done = client.wait_job(job_id, timeout=timeout)  # JobFailed: the card refused, or lost the session
        responses = _responses(done)
        if len(responses) != len(plain):
            raise SdkError(f"the card answered {len(responses)} of {len(plain)} commands", code="bad_result")
        out = []
        for command, raw in zip(plain, responses, strict=True):
            checker.wrap(command)
            try:
                out.append(ResponseAPDU.parse(checker.unwrap(raw)))
            except (SCP03Error, GPError) as e:
                raise VerificationError(f"a response does not verify: {e}", code="rmac_failed") from None
        if [r.sw for r in out] != [0x9000, 0x9000]:
            raise JobFailed(
                f"the card answered {' '.join(f'{r.sw:04X}' for r in out)}", code="card_refused", job=done
            )
        try:
            card_kvn, card_kcvs = keydelivery.parse_response(out[-1].data)
        except keydelivery.KeyDeliveryError as e:
            raise VerificationError(str(e), code="bad_response") from None
        if card_kvn != kvn or [k.hex().upper() for k in card_kcvs] != rec.kcvs:
            raise VerificationError("the card confirmed another key set", code="kcv_mismatch")
    except SdkError as e:
        _fail(store, rec, e.code)
        raise
    rec.status = KEYSET_ACTIVE
    rec.error = ""
    rec.scp03_counter = None  # learnt on the first session
    store.save_key_set(rec)
    return {
        "job": job_id,
        "online": True,
        "receipt_verified": True,
        "rmac_verified": True,
        "se": info.to_json(),
        "key_set": rec.public(),
    }


def _fail(store: KeyStore, rec: KeySetRecord, code: str) -> None:
    rec.status = KEYSET_FAILED
    rec.error = code
    store.save_key_set(rec)


def verify_receipt(store: KeyStore, *, se_id: str, sd: str, kvn: int, receipt: bytes) -> dict[str, Any]:
    """Check a receipt (16 bytes, or ``86 10 …``) against the expected one kept for that key set."""
    rec = store.key_set(se_id, sd, kvn)
    if not rec.expected_receipt:
        raise UsageError(
            "this key set has no expected receipt (no package was built for it)", code="no_receipt"
        )
    if len(receipt) == 18 and receipt[:2] == b"\x86\x10":
        receipt = keyload.parse_receipt_response(receipt)
    try:
        keyload.verify_receipt(receipt, expected_receipt=bytes.fromhex(rec.expected_receipt))
    except keyload.KeyLoadError:
        raise VerificationError(
            "the receipt does not match this key set's package", code="receipt_mismatch"
        ) from None
    return {"receipt_verified": True, "key_set": rec.public()}


# --- SCP03 sessions through run_script jobs ----------------------------------------------------


def _active_key_set(store: KeyStore, device_id: str, sd: bytes, kvn: int | None) -> KeySetRecord:
    sd_hex = sd.hex().upper()
    found = [
        r
        for r in store.key_sets()
        if r.device == device_id
        and r.sd == sd_hex
        and r.status == KEYSET_ACTIVE
        and (kvn is None or r.kvn == kvn)
    ]
    if not found:
        raise UsageError(
            f"no active key set for device {device_id} and SD {sd_hex} in the store; run `keys load`",
            code="no_key_set",
        )
    return max(found, key=lambda r: r.updated_at if kvn is not None else r.created_at)


def _level_for(i_param: int) -> int:
    if i_param & I_R_ENCRYPTION and i_param & I_R_MAC:
        return C_MAC | C_DECRYPTION | R_MAC | R_ENCRYPTION
    if i_param & I_R_MAC:
        return C_MAC | C_DECRYPTION | R_MAC
    return C_MAC | C_DECRYPTION


def _predicted_iu(
    keys: StaticKeys, *, kvn: int, i_param: int, counter: int, aid: bytes, host_challenge: bytes
) -> bytes:
    """INITIALIZE UPDATE response data a card with these keys and counter gives (Amd D §6.2.2)."""
    s16 = bool(i_param & _I_S16)
    n = 16 if s16 else 8
    challenge = pseudo_random_card_challenge(keys.enc, counter, aid, s16=s16)
    context = host_challenge + challenge
    s_mac = kdf(keys.mac, 0x06, context, 8 * keys.key_length)
    cryptogram = kdf(s_mac, 0x00, context, 8 * n)
    return bytes(10) + bytes((kvn, 0x03, i_param)) + challenge + cryptogram + counter.to_bytes(3, "big")


def _responses(job: dict[str, Any]) -> list[bytes]:
    raw = _job_result(job).get("responses", [])
    if not isinstance(raw, list):
        raise SdkError("the job's result has no list of responses", code="bad_result")
    try:
        return [bytes.fromhex(str(r)) for r in raw]
    except ValueError:
        raise SdkError("the job's responses are not hex", code="bad_result") from None


def _run(
    client: ApiClient, device_id: str, sd: bytes, commands: list[bytes], timeout: float
) -> tuple[str, list[bytes]]:
    job = client.submit_job(
        device_id, JOB_RUN_SCRIPT, {"sd": sd.hex().upper(), "commands": [c.hex().upper() for c in commands]}
    )
    job_id = str(job.get("id", ""))
    try:
        done = client.wait_job(job_id, timeout=timeout)
    except JobFailed as e:
        if _job_result(e.job).get("responses"):
            return job_id, _responses(e.job)
        raise
    return job_id, _responses(done)


def _learn_counter(
    client: ApiClient,
    store: KeyStore,
    rec: KeySetRecord,
    keys: StaticKeys,
    device_id: str,
    sd: bytes,
    timeout: float,
) -> str:
    """A first ``run_script`` job with INITIALIZE UPDATE alone: the card's i-param and counter,
    its cryptogram checked (proving it holds these keys). Records the counter the next one uses."""
    host_challenge = os.urandom(8)
    iu = InitializeUpdate(host_challenge, rec.kvn).to_apdu().encode()
    job_id, responses = _run(client, device_id, sd, [iu], timeout)
    if not responses:
        raise SdkError("the card answered nothing to INITIALIZE UPDATE", code="no_response")
    rsp = ResponseAPDU.parse(responses[0])
    if rsp.sw != 0x9000:
        raise SdkError(f"INITIALIZE UPDATE answered {rsp.sw:04X}", code="initialize_update_failed")
    data = rsp.data
    if len(data) < 13:
        raise VerificationError("INITIALIZE UPDATE response too short", code="bad_response")
    i_param = data[12]
    if not i_param & I_PSEUDO_RANDOM:
        raise SdkError(
            f"the SD's i-param {i_param:02X} uses random card challenges: a session needs the card's challenge and "
            "the host cryptogram within one exchange, which run_script jobs cannot carry",
            code="interactive_required",
        )
    if i_param & _I_S16:
        # an S16 card refuses our 8-byte challenge's cryptogram check; its counter is still readable,
        # and the session proper (S16) checks the card cryptogram against the prediction
        counter = int.from_bytes(data[-3:], "big")
    else:
        host = HostSession(keys, security_level=C_MAC, host_challenge=host_challenge, key_version=rec.kvn)
        try:
            host.external_authenticate(data)
        except SCP03Error as e:
            raise VerificationError(
                f"the card does not hold this key set: {e}", code="card_auth_failed"
            ) from None
        assert host.sequence_counter is not None
        counter = host.sequence_counter
    rec.i_param = i_param
    rec.scp03_counter = counter + 1
    store.save_key_set(rec)
    return job_id


def run_script(
    store: KeyStore,
    client: ApiClient,
    *,
    device_id: str,
    sd: bytes,
    apdus: Sequence[bytes],
    kvn: int | None = None,
    timeout: float = 300.0,
) -> dict[str, Any]:
    """Open an SCP03 session to the SD with the stored keys and run ``apdus`` in it.

    The whole session is precomputed (INITIALIZE UPDATE, EXTERNAL AUTHENTICATE, the wrapped
    commands) from the card's pseudo-random challenge, which follows from Key-ENC, the SD's AID and
    its sequence counter. The counter is kept in the store after each session; when it is unknown a
    first job sends INITIALIZE UPDATE alone to learn it. Every response's R-MAC is verified (R-ENC
    decrypted) before it is printed."""
    if not apdus:
        raise UsageError("give at least one --apdu", code="no_apdu")
    rec = _active_key_set(store, device_id, sd, kvn)
    enc, mac, dek = store.keys_of(rec)
    keys = StaticKeys(enc, mac, dek)
    jobs = []
    if rec.scp03_counter is None or rec.i_param is None:
        jobs.append(_learn_counter(client, store, rec, keys, device_id, sd, timeout))
    assert rec.i_param is not None and rec.scp03_counter is not None
    counter, i_param = rec.scp03_counter, rec.i_param
    level = _level_for(i_param)
    host_challenge = os.urandom(16 if i_param & _I_S16 else 8)
    host = HostSession(keys, security_level=level, host_challenge=host_challenge, key_version=rec.kvn)
    predicted = _predicted_iu(
        keys, kvn=rec.kvn, i_param=i_param, counter=counter, aid=sd, host_challenge=host_challenge
    )
    iu = InitializeUpdate(host_challenge, rec.kvn).to_apdu().encode()
    ea = host.external_authenticate(predicted)
    wrapped = [host.wrap(a) for a in apdus]
    # R-MACs chain on each command's MAC: a second, identical session replays command by command to
    # check each response in its place (wrapping is deterministic)
    checker = HostSession(keys, security_level=level, host_challenge=host_challenge, key_version=rec.kvn)
    checker.external_authenticate(predicted)
    # the counter is spent whatever happens next: never reuse it
    rec.scp03_counter = counter + 1
    store.save_key_set(rec)
    job_id, responses = _run(client, device_id, sd, [iu, ea, *wrapped], timeout)
    jobs.append(job_id)
    if len(responses) < 2:
        raise SdkError("the card's answers stop before the session opened", code="session_not_opened")
    iu_rsp, ea_rsp = ResponseAPDU.parse(responses[0]), ResponseAPDU.parse(responses[1])
    if iu_rsp.sw != 0x9000 or iu_rsp.data[13:] != predicted[13:]:
        rec.scp03_counter = None  # learn it again next time
        store.save_key_set(rec)
        raise VerificationError(
            "the card's INITIALIZE UPDATE answer differs from the prediction (its counter moved); run again",
            code="counter_mismatch",
        )
    if ea_rsp.sw != 0x9000:
        raise VerificationError(f"EXTERNAL AUTHENTICATE answered {ea_rsp.sw:04X}", code="card_auth_failed")
    out = []
    for command, sent, raw in zip(apdus, wrapped, responses[2:], strict=False):
        if checker.wrap(command) != sent:  # pragma: no cover - wrapping is deterministic
            raise SdkError("the session replay diverged", code="internal_error")
        try:
            plain = ResponseAPDU.parse(checker.unwrap(raw))
        except SCP03Error as e:
            raise VerificationError(f"a response does not verify: {e}", code="rmac_failed") from None
        out.append(
            {"command": command.hex().upper(), "sw": f"{plain.sw:04X}", "data": plain.data.hex().upper()}
        )
    return {
        "jobs": jobs,
        "kvn": f"{rec.kvn:02X}",
        "security_level": f"{level:02X}",
        "rmac_verified": bool(level & R_MAC),
        "completed": len(out) == len(apdus),
        "responses": out,
    }


def personalize(
    store: KeyStore,
    client: ApiClient,
    *,
    device_id: str,
    sd: bytes,
    app: bytes,
    dgis: Sequence[tuple[int, bytes]],
    kvn: int | None = None,
    timeout: float = 300.0,
) -> dict[str, Any]:
    """INSTALL [for personalization] of ``app`` then its DGIs in STORE DATA, in a session to ``sd``."""
    if not dgis:
        raise UsageError("give at least one --dgi TAG=VALUE", code="no_dgi")
    commands = [InstallForPersonalization(AID(app)).to_apdu().encode()]
    blocks: list[bytes] = []
    for tag, value in dgis:
        blocks.append(encode_dgis([DGI(tag, value)]))
    for n, block in enumerate(blocks):
        if len(block) > 239:
            raise UsageError(
                "a DGI longer than 236 bytes does not fit one STORE DATA block", code="dgi_too_long"
            )
        last = n == len(blocks) - 1
        commands.append(StoreData(n, block, last=last, structure=DataStructure.DGI).to_apdu().encode())
    result = run_script(store, client, device_id=device_id, sd=sd, apdus=commands, kvn=kvn, timeout=timeout)
    failed = [r for r in result["responses"] if r["sw"] != "9000"]
    result["personalized"] = result["completed"] and not failed
    return result
