"""Payloads of the confidential key-loading job kinds (issue 5 item 4; DESIGN §6), Django-free.

Tessera never holds the provider's keys: these builders only move public or opaque bytes.

- :func:`casd_personalize` — ISD session.  STORE DATA, DGI structure, to the selected ISD
  (``docs/softcard-casd.md``): DGI ``7F49`` the CA-KLOC public key (``83 02 <KID> <KVN>``,
  ``B0 <point>``, ``F0 00``, ``42 <CA identifier>``), DGI ``7F21`` the SE's own CASD certificate
  (GP form), DGI ``0093`` the CA's revoked serials.  One DGI per block (a DGI must fit a block).
- :func:`relay_key_package` — ISD session.  INSTALL [for personalization] of the target SSD, then
  the provider's package (``docs/key-loading-package.md`` §6) in STORE DATA blocks, structure
  ``00``, the last one flagged and asking for its response (``86 10 <receipt>``).
- :func:`relay_script` — no session of ours: SELECT the provider's SD in the clear, then the
  provider's own C-APDUs unchanged (it opened its SCP03 session with keys Tessera never sees).
- SCP11a delivery (``load_keys_scp11``, ``docs/key-loading-package.md`` §8), two rounds on one
  card session: :func:`check_scp11_authenticate` + :func:`scp11_open_script` (SELECT ISD, the
  provider's PERFORM SECURITY OPERATION chain and MUTUAL AUTHENTICATE), then
  :func:`check_scp11_delivery` + :func:`scp11_deliver_script` (its INSTALL [for personalization]
  and key-set STORE DATA, wrapped in its session, relayed with no SELECT in between).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gp import keydelivery, tlv
from gp.apdu import CommandAPDU, ResponseAPDU
from gp.commands import AID, DGI, DataStructure, InstallForPersonalization, Select, StoreData
from gp.errors import GPError
from jobs.compiler.payloads import MAX_STORE_DATA_BLOCK
from jobs.compiler.session import CompilerError, PayloadCommand, Script, ScriptCommand, sw_matches

__all__ = [
    "SCP11_LEVEL",
    "Scp11Handshake",
    "check_scp11_authenticate",
    "check_scp11_delivery",
    "scp11_deliver_script",
    "scp11_open_script",
    "CA_KEY_KID",
    "CA_KEY_KVN",
    "DGI_CA_KEY",
    "DGI_CERTIFICATE_STORE",
    "DGI_REVOKED_SERIALS",
    "RELAY_EXPECT",
    "RelayOutcome",
    "casd_dgis",
    "casd_personalize",
    "check_relay_command",
    "relay_key_package",
    "relay_outcome",
    "relay_script",
]

DGI_CERTIFICATE_STORE = 0x7F21
DGI_CA_KEY = 0x7F49
DGI_REVOKED_SERIALS = 0x0093
CA_KEY_KID, CA_KEY_KVN = 0x10, 0x01  # PK.CA-KLOC.ECDSA reference (Amd F Table 7-6 style)
P256_REFERENCE = 0x00  # GPCS Table B-2
MAX_DGI_VALUE = MAX_STORE_DATA_BLOCK - 4  # 2-byte DGI tag + 1..3 length bytes
MAX_RELAY_COMMANDS = 64
MAX_RELAY_BYTES = 16384
MAX_COMMAND_BYTES = 261  # CLA INS P1 P2 Lc, 255 data bytes, Le
# Status words that let the provider's script go on: success, and GET STATUS "more data".
RELAY_EXPECT = ("9000", "6310")
_SELECT_EXPECT = ("9000",)
_INS_SELECT, _INS_MANAGE_CHANNEL = 0xA4, 0x70


def casd_dgis(
    *, ca_point: bytes, ca_identifier: bytes, certificate: bytes, revoked: Sequence[bytes]
) -> list[DGI]:
    """The three CASD DGIs; raises :class:`CompilerError` when one does not fit a STORE DATA block."""
    if len(ca_point) != 65 or ca_point[0] != 0x04:
        raise CompilerError("the CA key must be an uncompressed P-256 point (65 bytes)")
    ca_value = (
        bytes((0x83, 0x02, CA_KEY_KID, CA_KEY_KVN, 0xB0, len(ca_point)))
        + ca_point
        + bytes((0xF0, 0x01, P256_REFERENCE, 0x42, len(ca_identifier)))
        + ca_identifier
    )
    revoked_value = b"".join(bytes((0x93, len(s))) + s for s in revoked)
    if any(not 1 <= len(s) <= 20 for s in revoked):
        raise CompilerError("a revoked serial is 1..20 bytes")
    dgis = [
        DGI(DGI_CA_KEY, ca_value),
        DGI(DGI_CERTIFICATE_STORE, bytes(certificate)),
        DGI(DGI_REVOKED_SERIALS, revoked_value),
    ]
    for d in dgis:
        if len(d.value) > MAX_DGI_VALUE:
            raise CompilerError(f"DGI {d.tag:04X} of {len(d.value)} bytes does not fit a STORE DATA block")
    return dgis


def casd_personalize(
    *, ca_point: bytes, ca_identifier: bytes, certificate: bytes, revoked: Sequence[bytes]
) -> list[PayloadCommand]:
    """STORE DATA of the CASD DGIs to the ISD of the session, one DGI per block."""
    dgis = casd_dgis(ca_point=ca_point, ca_identifier=ca_identifier, certificate=certificate, revoked=revoked)
    names = {
        DGI_CA_KEY: "CA key",
        DGI_CERTIFICATE_STORE: "CASD certificate",
        DGI_REVOKED_SERIALS: "revoked serials",
    }
    out = []
    for i, d in enumerate(dgis):
        last = i == len(dgis) - 1
        sd = StoreData(i, d.encode(), last=last, structure=DataStructure.DGI)
        out.append(
            PayloadCommand(sd.to_apdu().encode(), ("9000",), f"STORE DATA {names[d.tag]} (DGI {d.tag:04X})")
        )
    return out


def relay_key_package(
    *, sd_aid: bytes, package: bytes, block_size: int = MAX_STORE_DATA_BLOCK
) -> list[PayloadCommand]:
    """INSTALL [for personalization] of ``sd_aid`` + the package in STORE DATA blocks (structure 00).

    The package is opaque here: the caller validated its form; the card verifies everything.
    """
    if not package:
        raise CompilerError("empty key-loading package")
    if not 16 <= block_size <= MAX_STORE_DATA_BLOCK:
        raise CompilerError(f"STORE DATA block size must be 16..{MAX_STORE_DATA_BLOCK}")
    chunks = [package[i : i + block_size] for i in range(0, len(package), block_size)]
    if len(chunks) > 256:
        raise CompilerError("key-loading package longer than 256 STORE DATA blocks")
    out = [
        PayloadCommand(
            InstallForPersonalization(AID(sd_aid)).to_apdu().encode(),
            ("9000",),
            "INSTALL [for personalization] SSD",
        )
    ]
    for i, chunk in enumerate(chunks):
        last = i == len(chunks) - 1
        sd = StoreData(i, chunk, last=last, structure=DataStructure.NONE, response_expected=last)
        label = f"STORE DATA package block {i}" + (" (last)" if last else "")
        out.append(PayloadCommand(sd.to_apdu().encode(), ("9000",), label))
    return out


def check_relay_command(apdu: bytes) -> CommandAPDU:
    """One C-APDU of a provider's script: well formed, basic channel, neither SELECT nor MANAGE
    CHANNEL (the script stays on the SD Tessera selected).  Raises :class:`CompilerError`."""
    if len(apdu) > MAX_COMMAND_BYTES:
        raise CompilerError(f"a command is at most {MAX_COMMAND_BYTES} bytes (short APDU)")
    try:
        cmd = CommandAPDU.parse(bytes(apdu))
    except GPError as e:
        raise CompilerError(f"not a command APDU: {e}") from None
    cla = apdu[0]
    if cla == 0xFF or (cla & 0x03) or (cla & 0x40):
        raise CompilerError("commands run on the basic logical channel (CLA channel bits 0)")
    if cmd.ins in (_INS_SELECT, _INS_MANAGE_CHANNEL):
        raise CompilerError("SELECT and MANAGE CHANNEL are not allowed: the script runs on its own SD")
    return cmd


def relay_script(*, sd_aid: bytes, commands: Sequence[bytes]) -> Script:
    """SELECT ``sd_aid`` in the clear, then ``commands`` as given (each checked)."""
    if not 1 <= len(commands) <= MAX_RELAY_COMMANDS:
        raise CompilerError(f"a script has 1..{MAX_RELAY_COMMANDS} commands")
    if sum(len(c) for c in commands) > MAX_RELAY_BYTES:
        raise CompilerError(f"a script has at most {MAX_RELAY_BYTES} bytes of commands")
    for c in commands:
        check_relay_command(c)
    out = [ScriptCommand(Select(AID(sd_aid)).to_apdu().encode(), _SELECT_EXPECT, "SELECT SD")]
    out += [ScriptCommand(bytes(c), RELAY_EXPECT, f"provider command {i}") for i, c in enumerate(commands)]
    return Script(out, 1)


@dataclass(frozen=True)
class RelayOutcome:
    """The card's answers to a relayed script: ``responses`` to the provider's commands (full
    R-APDUs), whether all ran and answered an expected status word, and the first refusal."""

    responses: list[bytes]
    completed: bool
    select_sw: int | None
    failed_index: int | None = None
    failed_sw: int | None = None


def relay_outcome(*, n_commands: int, responses: Sequence[bytes], after_select: bool = True) -> RelayOutcome:
    """Read the agent's responses to :func:`relay_script` (SELECT first) or, ``after_select=False``, to
    :func:`scp11_deliver_script` (no SELECT; ``select_sw`` is then the first answer's SW). Raises
    CompilerError when they cannot belong to it (more answers than commands, malformed R-APDUs)."""
    if not after_select:
        responses = [b"\x90\x00", *responses] if responses else []
    if len(responses) > n_commands + 1:
        raise CompilerError(f"{len(responses)} responses for {n_commands + 1} commands")
    parsed = []
    for i, raw in enumerate(responses):
        try:
            parsed.append(ResponseAPDU.parse(bytes(raw)))
        except GPError as e:
            raise CompilerError(f"response {i} is malformed: {e}") from None
    if not parsed:
        return RelayOutcome([], False, None)
    select = parsed[0]
    if not sw_matches(select.sw, _SELECT_EXPECT):
        return RelayOutcome([], False, select.sw, -1, select.sw)
    rest = [bytes(r) for r in responses[1:]]
    for i, r in enumerate(parsed[1:]):
        if not sw_matches(r.sw, RELAY_EXPECT):
            return RelayOutcome(rest[: i + 1], False, select.sw, i, r.sw)
    return RelayOutcome(rest, len(rest) == n_commands, select.sw)


# --- SCP11a delivery (load_keys_scp11) ---------------------------------------------------------------

SCP11_LEVEL = 0x34  # C-MAC + R-MAC: the relay reads what the commands address; keys are under S-DEK
_INS_PSO, _INS_MUTUAL_AUTHENTICATE = 0x2A, 0x82
_INS_INSTALL, _INS_STORE_DATA = 0xE6, 0xE2
_MAC_LENGTH = 8  # S8 mode (gp.scp11 default)
MAX_AUTHENTICATE_COMMANDS = 40  # 4 certificates of 2048 bytes in 255-byte blocks, + 1


@dataclass(frozen=True)
class Scp11Handshake:
    """What the relay reads from the provider's opening commands (all public)."""

    certificates: list[bytes]
    variant: str
    security_level: int
    kvn: int
    kid: int


def check_scp11_authenticate(commands: Sequence[bytes]) -> Scp11Handshake:
    """The provider's SCP11a opening: PERFORM SECURITY OPERATION (``80 2A``, ``90 2A`` for a
    non-final block) one or more times, then MUTUAL AUTHENTICATE (``80 82``, P2 ≠ 00) last, whose
    ``A6`` template asks for SCP11a or c at security level ``34``. Returns the certificates (the
    blocks joined) and the parameters. Raises :class:`CompilerError`."""
    if not 2 <= len(commands) <= MAX_AUTHENTICATE_COMMANDS:
        raise CompilerError(
            f"the opening is 2..{MAX_AUTHENTICATE_COMMANDS} commands: PSO chain, MUTUAL AUTHENTICATE"
        )
    parsed = []
    for i, raw in enumerate(commands):
        if len(raw) > MAX_COMMAND_BYTES:
            raise CompilerError(f"command {i}: at most {MAX_COMMAND_BYTES} bytes (short APDU)")
        try:
            parsed.append(CommandAPDU.parse(bytes(raw)))
        except GPError as e:
            raise CompilerError(f"command {i}: not a command APDU: {e}") from None
    certificates: list[bytes] = []
    block = b""
    for i, cmd in enumerate(parsed[:-1]):
        if cmd.ins != _INS_PSO or bytes(commands[i])[0] not in (0x80, 0x90):
            raise CompilerError(f"command {i}: expected PERFORM SECURITY OPERATION (80 2A or 90 2A)")
        more_blocks = bool(cmd.p1 & 0x80)
        if more_blocks != (bytes(commands[i])[0] == 0x90):
            raise CompilerError(f"command {i}: P1 b8 and the chaining bit of CLA disagree")
        block += cmd.data
        if not more_blocks:
            certificates.append(block)
            block = b""
    if block:
        raise CompilerError("the last certificate's blocks do not end before MUTUAL AUTHENTICATE")
    last = parsed[-1]
    if bytes(commands[-1])[0] != 0x80 or last.ins != _INS_MUTUAL_AUTHENTICATE or last.p2 == 0:
        raise CompilerError("the last command must be MUTUAL AUTHENTICATE (80 82, P2 = the SCP11 key id)")
    try:
        top = {t.tag: t.value for t in tlv.parse_all(last.data)}
        crt = {t.tag: t.value for t in tlv.parse_all(top[0xA6])}
    except (GPError, KeyError):
        raise CompilerError("MUTUAL AUTHENTICATE data must be A6 { 90, 95, 80, 81 } 5F49 <ePK.OCE>") from None
    params = crt.get(0x90, b"")
    variants = {b"\x11\x01": "a", b"\x11\x03": "c"}
    if params not in variants:
        raise CompilerError("MUTUAL AUTHENTICATE must ask for SCP11a (90 02 11 01) or SCP11c (90 02 11 03)")
    level = crt.get(0x95, b"")
    if level != bytes((SCP11_LEVEL,)):
        raise CompilerError(
            "the session must run at security level 34 (C-MAC, R-MAC): Tessera checks which SD the "
            "commands address; the keys travel under S-DEK"
        )
    return Scp11Handshake(certificates, variants[params], SCP11_LEVEL, last.p1 & 0x7F, last.p2 & 0x7F)


def scp11_open_script(*, isd_aid: bytes, commands: Sequence[bytes]) -> Script:
    """Round 1: SELECT the ISD in the clear, then the provider's opening, each answered 9000."""
    check_scp11_authenticate(commands)
    out = [ScriptCommand(Select(AID(isd_aid)).to_apdu().encode(), _SELECT_EXPECT, "SELECT ISD")]
    out += [ScriptCommand(bytes(c), ("9000",), f"provider command {i}") for i, c in enumerate(commands)]
    return Script(out, 1)


def _strip_mac(cmd: CommandAPDU, raw: bytes, what: str) -> bytes:
    if raw[0] != 0x84:
        raise CompilerError(f"{what} must be secured in the provider's session (CLA 84)")
    if len(cmd.data) <= _MAC_LENGTH:
        raise CompilerError(f"{what} carries no data before its C-MAC")
    return cmd.data[:-_MAC_LENGTH]


def check_scp11_delivery(commands: Sequence[bytes], *, sd_aid: bytes) -> keydelivery.KeySetControl:
    """Round 2: exactly INSTALL [for personalization] of ``sd_aid`` and one key-set STORE DATA
    (``docs/key-loading-package.md`` §8), C-MAC'd at level 34 so their data is readable here.
    Returns the key set's control template (KVN, length, KCVs). Raises :class:`CompilerError`."""
    if len(commands) != 2:
        raise CompilerError("round 2 is two commands: INSTALL [for personalization], STORE DATA")
    parsed = []
    for i, raw in enumerate(commands):
        if len(raw) > MAX_COMMAND_BYTES:
            raise CompilerError(f"command {i}: at most {MAX_COMMAND_BYTES} bytes (short APDU)")
        try:
            parsed.append(CommandAPDU.parse(bytes(raw)))
        except GPError as e:
            raise CompilerError(f"command {i}: not a command APDU: {e}") from None
    install, store = parsed
    if install.ins != _INS_INSTALL or install.p1 != 0x20:
        raise CompilerError("command 0 must be INSTALL [for personalization] (84 E6 20 00)")
    expected = bytes((0, 0, len(sd_aid))) + bytes(sd_aid) + bytes(3)
    if _strip_mac(install, bytes(commands[0]), "INSTALL") != expected:
        raise CompilerError("INSTALL [for personalization] must name this job's security domain")
    if store.ins != _INS_STORE_DATA or store.p1 != keydelivery.STORE_DATA_P1 or store.p2 != 0:
        raise CompilerError("command 1 must be the key-set STORE DATA (84 E2 89 00)")
    try:
        return keydelivery.read_key_set_dgis(_strip_mac(store, bytes(commands[1]), "STORE DATA"))
    except keydelivery.KeyDeliveryError as e:
        raise CompilerError(f"STORE DATA: {e}") from None


def scp11_deliver_script(commands: Sequence[bytes]) -> Script:
    """Round 2 on the card session round 1 opened: the provider's commands, no SELECT before them."""
    return Script(
        [ScriptCommand(bytes(c), ("9000",), f"provider command {i}") for i, c in enumerate(commands)], 1
    )
