"""The "OP-TEE profile": what OP-TEE's PKCS#11 TA (optee_os ≥ 3.17) accepts, enforced before each call.

SoftHSMv2 accepts more than OP-TEE does, so code that passes on SoftHSM could still fail on a
gateway. :class:`OpteeProfile` refuses, *before* the call reaches the token, every mechanism and
template the TA would reject (docs/tee-bridge.md §5, from ``ta/pkcs11/src`` of optee_os):

- mechanisms outside the intersection of OP-TEE ≥ 3.17 and SoftHSM 2.6.1 used by the agent
  (no ECDSA_SHA256 — SoftHSM 2.6.1 lacks it —, no SP800-108 or HKDF derivation, no AES key wrap,
  no CONCATENATE_*, no C_UnwrapKey at all);
- ECDH1_DERIVE with a KDF other than CKD_NULL, with shared data, or a peer point that is not the raw
  65-byte ``04‖X‖Y`` (DER-wrapped or compressed points fail on OP-TEE);
- a derived key without CKA_VALUE_LEN, CKA_CLASS or CKA_KEY_TYPE;
- an ENCRYPT_DATA derivation from a parent with CKA_ENCRYPT = TRUE (OP-TEE: CKR_FUNCTION_FAILED),
  or data that is not a whole number of AES blocks;
- a key template (generate, derive, copy to token) that leaves CKA_EXTRACTABLE or CKA_SENSITIVE to the
  token's default (OP-TEE's C_UnwrapKey defaults EXTRACTABLE to TRUE; we never rely on a default);
- HMAC keys outside 32..128 bytes; raw ECDSA over anything but a 32-byte digest.

The agent runs every token through this profile (tests and gateways alike): a violation is a bug
in the agent, reported as :class:`ProfileViolation` naming the rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent.errors import BackendError

__all__ = ["MINIMUM_OPTEE", "OpteeProfile", "ProfileViolation", "REQUIRED_MECHANISMS"]

# CKM_* values (PKCS#11 v3.0), kept numeric so this module needs no python-pkcs11 import.
CKM_EC_KEY_PAIR_GEN = 0x1040
CKM_ECDSA = 0x1041
CKM_ECDSA_SHA256 = 0x1044
CKM_ECDH1_DERIVE = 0x1050
CKM_AES_KEY_GEN = 0x1080
CKM_AES_ECB = 0x1081
CKM_AES_CBC = 0x1082
CKM_AES_CMAC = 0x108A
CKM_AES_GCM = 0x1087
CKM_AES_ECB_ENCRYPT_DATA = 0x1104
CKM_AES_CBC_ENCRYPT_DATA = 0x1105
CKM_GENERIC_SECRET_KEY_GEN = 0x0350
CKM_SHA256_HMAC = 0x0251
CKM_AES_KEY_WRAP = 0x2109
CKM_AES_KEY_WRAP_PAD = 0x210A
CKM_SP800_108_COUNTER_KDF = 0x03AC
CKM_HKDF_DERIVE = 0x402A
CKM_CONCATENATE_BASE_AND_KEY = 0x0360
CKD_NULL = 0x0001

NAMES = {
    CKM_EC_KEY_PAIR_GEN: "EC_KEY_PAIR_GEN",
    CKM_ECDSA: "ECDSA",
    CKM_ECDSA_SHA256: "ECDSA_SHA256",
    CKM_ECDH1_DERIVE: "ECDH1_DERIVE",
    CKM_AES_KEY_GEN: "AES_KEY_GEN",
    CKM_AES_ECB: "AES_ECB",
    CKM_AES_CBC: "AES_CBC",
    CKM_AES_CMAC: "AES_CMAC",
    CKM_AES_GCM: "AES_GCM",
    CKM_AES_ECB_ENCRYPT_DATA: "AES_ECB_ENCRYPT_DATA",
    CKM_AES_CBC_ENCRYPT_DATA: "AES_CBC_ENCRYPT_DATA",
    CKM_GENERIC_SECRET_KEY_GEN: "GENERIC_SECRET_KEY_GEN",
    CKM_SHA256_HMAC: "SHA256_HMAC",
    CKM_AES_KEY_WRAP: "AES_KEY_WRAP",
    CKM_AES_KEY_WRAP_PAD: "AES_KEY_WRAP_PAD",
    CKM_SP800_108_COUNTER_KDF: "SP800_108_COUNTER_KDF",
    CKM_HKDF_DERIVE: "HKDF_DERIVE",
    CKM_CONCATENATE_BASE_AND_KEY: "CONCATENATE_BASE_AND_KEY",
}

# What the agent needs, per function, with the first optee_os release offering it.
MINIMUM_OPTEE = {
    CKM_EC_KEY_PAIR_GEN: "3.14",
    CKM_ECDSA: "3.14",
    CKM_ECDH1_DERIVE: "3.17",
    CKM_AES_ECB_ENCRYPT_DATA: "3.11",
    CKM_AES_CMAC: "3.11",
    CKM_GENERIC_SECRET_KEY_GEN: "3.12",
    CKM_SHA256_HMAC: "3.12",
}
# (mechanism, the CKF_* flag it must carry, what the agent uses it for)
CKF_SIGN = 0x800
CKF_DERIVE = 0x80000
CKF_GENERATE = 0x8000
CKF_GENERATE_KEY_PAIR = 0x10000
REQUIRED_MECHANISMS: tuple[tuple[int, int, str], ...] = (
    (CKM_EC_KEY_PAIR_GEN, CKF_GENERATE_KEY_PAIR, "to create the identity and receive keys"),
    (CKM_ECDSA, CKF_SIGN, "to sign the agent's requests"),
    (CKM_ECDH1_DERIVE, CKF_DERIVE, "to receive keys from Tessera"),
    (CKM_AES_ECB_ENCRYPT_DATA, CKF_DERIVE, "to receive keys from Tessera"),
    (CKM_AES_CMAC, CKF_SIGN, "for key confirmation and session keys"),
    (CKM_GENERIC_SECRET_KEY_GEN, CKF_GENERATE, "for the soft SE's state key"),
    (CKM_SHA256_HMAC, CKF_SIGN, "for the soft SE's state key"),
)

_ALLOWED = {
    "generate": {CKM_AES_KEY_GEN, CKM_GENERIC_SECRET_KEY_GEN},
    "generate_pair": {CKM_EC_KEY_PAIR_GEN},
    "derive": {CKM_ECDH1_DERIVE, CKM_AES_ECB_ENCRYPT_DATA, CKM_AES_CBC_ENCRYPT_DATA},
    "sign": {CKM_ECDSA, CKM_AES_CMAC, CKM_SHA256_HMAC},
    "encrypt": {CKM_AES_GCM, CKM_AES_ECB, CKM_AES_CBC},
    "decrypt": {CKM_AES_GCM, CKM_AES_ECB, CKM_AES_CBC},
    "unwrap": set(),  # none common to released OP-TEE and SoftHSM 2.6.1
}

# CKA_* values
CKA_CLASS = 0x000
CKA_TOKEN = 0x001
CKA_PRIVATE = 0x002
CKA_LABEL = 0x003
CKA_VALUE = 0x011
CKA_KEY_TYPE = 0x100
CKA_SENSITIVE = 0x103
CKA_ENCRYPT = 0x104
CKA_DERIVE = 0x10C
CKA_EC_PARAMS = 0x180
CKA_VALUE_LEN = 0x161
CKA_EXTRACTABLE = 0x162
CKK_GENERIC_SECRET = 0x10
CKK_AES = 0x1F
CKO_SECRET_KEY = 4
CKO_PRIVATE_KEY = 3
P256_PARAMS = bytes.fromhex("06082A8648CE3D030107")
_COPY_ALLOWED = {CKA_TOKEN, CKA_PRIVATE, CKA_LABEL}


class ProfileViolation(BackendError):
    """The agent asked the token for something OP-TEE's PKCS#11 TA would refuse."""


def _name(mechanism: int) -> str:
    return NAMES.get(int(mechanism), f"CKM 0x{int(mechanism):X}")


def _get(template: Mapping[Any, Any], attr: int) -> Any:
    for key, value in template.items():
        if int(key) == attr:
            return value
    return None


def _has(template: Mapping[Any, Any], attr: int) -> bool:
    return any(int(key) == attr for key in template)


class OpteeProfile:
    """Checks one PKCS#11 call at a time; every method raises :class:`ProfileViolation` or returns."""

    name = "optee"

    def mechanism(self, function: str, mechanism: int) -> None:
        if int(mechanism) not in _ALLOWED[function]:
            raise ProfileViolation(
                f"OP-TEE profile: {_name(mechanism)} is not usable for {function} on OP-TEE's PKCS#11 TA "
                "(or not shared with SoftHSM 2.6.1)"
            )

    def _key_template(self, function: str, template: Mapping[Any, Any]) -> None:
        cls = _get(template, CKA_CLASS)
        if cls is None:
            raise ProfileViolation(f"OP-TEE profile: {function}: the template must set CKA_CLASS")
        if int(cls) in (CKO_SECRET_KEY, CKO_PRIVATE_KEY):
            for attr, name in ((CKA_EXTRACTABLE, "CKA_EXTRACTABLE"), (CKA_SENSITIVE, "CKA_SENSITIVE")):
                if not _has(template, attr):
                    raise ProfileViolation(
                        f"OP-TEE profile: {function}: {name} must be set explicitly (never the token's default)"
                    )
            if not _has(template, CKA_TOKEN):
                raise ProfileViolation(f"OP-TEE profile: {function}: CKA_TOKEN must be set explicitly")
        if _get(template, CKA_VALUE) is not None:
            raise ProfileViolation(f"OP-TEE profile: {function}: a key value never goes into a template")

    def generate(self, mechanism: int, template: Mapping[Any, Any]) -> None:
        self.mechanism("generate", mechanism)
        self._key_template("generate", template)
        length = _get(template, CKA_VALUE_LEN)
        if length is None:
            raise ProfileViolation("OP-TEE profile: generate: CKA_VALUE_LEN is required")
        if int(mechanism) == CKM_GENERIC_SECRET_KEY_GEN and not 32 <= int(length) <= 128:
            raise ProfileViolation("OP-TEE profile: an HMAC-SHA256 key must be 32..128 bytes")
        if int(mechanism) == CKM_AES_KEY_GEN and int(length) not in (16, 24, 32):
            raise ProfileViolation("OP-TEE profile: an AES key is 16, 24 or 32 bytes")

    def generate_pair(self, mechanism: int, public: Mapping[Any, Any], private: Mapping[Any, Any]) -> None:
        self.mechanism("generate_pair", mechanism)
        if _get(public, CKA_EC_PARAMS) != P256_PARAMS:
            raise ProfileViolation("OP-TEE profile: EC keys are P-256 given by its named-curve OID")
        self._key_template("generate_pair", private)

    def derive(
        self,
        mechanism: int,
        param: Any,
        template: Mapping[Any, Any],
        base_encrypt: bool | None,
    ) -> None:
        self.mechanism("derive", mechanism)
        self._key_template("derive", template)
        for attr, name in ((CKA_VALUE_LEN, "CKA_VALUE_LEN"), (CKA_KEY_TYPE, "CKA_KEY_TYPE")):
            if not _has(template, attr):
                raise ProfileViolation(f"OP-TEE profile: derive: {name} is required in the template")
        if int(_get(template, CKA_KEY_TYPE)) not in (CKK_AES, CKK_GENERIC_SECRET):
            raise ProfileViolation("OP-TEE profile: derive: the derived key must be AES or GENERIC_SECRET")
        mech = int(mechanism)
        if mech == CKM_ECDH1_DERIVE:
            kdf, shared, point = param
            if int(kdf) != CKD_NULL:
                raise ProfileViolation("OP-TEE profile: ECDH1_DERIVE takes only CKD_NULL (no KDF)")
            if shared:
                raise ProfileViolation("OP-TEE profile: ECDH1_DERIVE takes no shared data")
            if not isinstance(point, bytes) or len(point) != 65 or point[0] != 0x04:
                raise ProfileViolation(
                    "OP-TEE profile: ECDH1_DERIVE needs the raw 65-byte 04‖X‖Y point (not DER, not compressed)"
                )
        else:
            data = param if mech == CKM_AES_ECB_ENCRYPT_DATA else (param[1] if param else b"")
            if not isinstance(data, bytes) or not data or len(data) % 16:
                raise ProfileViolation("OP-TEE profile: ENCRYPT_DATA needs whole AES blocks of data")
            if base_encrypt is not False:
                raise ProfileViolation(
                    "OP-TEE profile: an ENCRYPT_DATA parent must have CKA_ENCRYPT = FALSE "
                    "(OP-TEE answers CKR_FUNCTION_FAILED)"
                )

    def sign(self, mechanism: int, data: bytes) -> None:
        self.mechanism("sign", mechanism)
        if int(mechanism) == CKM_ECDSA and len(data) != 32:
            raise ProfileViolation("OP-TEE profile: raw ECDSA signs a 32-byte SHA-256 digest")

    def crypt(self, function: str, mechanism: int) -> None:
        self.mechanism(function, mechanism)

    def copy(self, template: Mapping[Any, Any]) -> None:
        extra = [int(k) for k in template if int(k) not in _COPY_ALLOWED]
        if extra:
            raise ProfileViolation(
                "OP-TEE profile: C_CopyObject may change only CKA_TOKEN, CKA_PRIVATE and CKA_LABEL"
            )

    def unwrap(self, mechanism: int) -> None:
        self.mechanism("unwrap", mechanism)
