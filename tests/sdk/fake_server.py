"""A stand-in for Tessera's public API, just big enough for the provider tooling's tests.

It speaks HTTP on 127.0.0.1 (so the CLI runs as its own process against it), keeps a CA (X.509
root; OCE and CASD certificates in X.509 and GP ``7F21`` form; a signed CRL) and one soft SE in
memory, and runs the two job kinds the SDK submits the way the portal's engine is specified to:
``load_keys_scp11`` = SELECT ISD and the provider's SCP11a opening, then (``jobs/<id>/input/``) its
wrapped delivery on the same card session;
``load_keys_confidential`` = the TSM's SCP03 session to the ISD, INSTALL [for personalization] of
the SSD, the package in STORE DATA blocks; ``run_script`` = SELECT the SD, then each command as
given. Nothing here is Tessera's code: the point is to exercise the SDK against a real card.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gp.apdu import ResponseAPDU
from gp.commands import (
    AID,
    DGI,
    InstallForInstall,
    InstallForPersonalization,
    InstallParameters,
    Privileges,
    Select,
    StoreData,
)
from gp.gpcert import KEY_USAGE_AGREEMENT, GPCertificate
from tests.gp.cardkit import Terminal, new_card
from tests.gp.test_scp11_card import ca_key_dgi, store_dgis

TOKEN = "provider-token-0123456789"
ORG = "provider"
SSD = AID("A000000151535001")
SD_ELF, SD_MODULE = AID("A0000001515350"), AID("A000000151535041")
NOW = dt.datetime.now(dt.UTC)


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@dataclass
class FakeTessera:
    ca_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    ca_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    device_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    se_uuid: str = field(default_factory=lambda: str(uuid.uuid4()))
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    certificates: dict[str, dict[str, Any]] = field(default_factory=dict)
    revoked: set[int] = field(default_factory=set)
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    tamper_receipt: bool = False
    casd_override: dict[str, Any] | None = None
    ssd_i_param: int = 0x70
    reset_between_rounds: bool = False  # load_keys_scp11: the card lost its session (agent restart)

    def __post_init__(self) -> None:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Fake Controlling Authority")])
        self.root = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=1))
            .not_valid_after(NOW + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .sign(self.ca_key, hashes.SHA256())
        )
        self.card = new_card()
        t = Terminal(self.card).open()
        casd = self._issue(
            self.card.casd_public_key(), cn=self.card.casd_identifier().hex().upper(), serial_number=self.se_uuid,
            kind="casd", subject_id=self.card.casd_identifier(),
        )  # fmt: skip
        self.casd_detail = casd
        assert (
            store_dgis(t, [DGI(0x7F21, bytes.fromhex(casd["gp_hex"])), ca_key_dgi(self.ca_key.public_key())])
            == 0x9000
        )
        params = InstallParameters(bytes.fromhex("810203") + bytes((self.ssd_i_param,)))
        t.ok(InstallForInstall(SD_ELF, SD_MODULE, SSD, Privileges.SECURITY_DOMAIN, params).to_apdu())

    # -- the CA --

    def _issue(
        self, public: ec.EllipticCurvePublicKey, *, cn: str, serial_number: str, kind: str, subject_id: bytes
    ) -> dict[str, Any]:
        serial = x509.random_serial_number() >> 32  # 16 bytes, as the GP form carries it
        cert = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.COMMON_NAME, cn),
                        x509.NameAttribute(NameOID.SERIAL_NUMBER, serial_number),
                    ]
                )
            )
            .issuer_name(self.root.subject)
            .public_key(public)
            .serial_number(serial)
            .not_valid_before(NOW - dt.timedelta(days=1))
            .not_valid_after(NOW + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, True, False, False, False, False), critical=True
            )
            .sign(self.ca_key, hashes.SHA256())
        )
        gp = GPCertificate(
            serial.to_bytes(16, "big"),
            b"CA-KLOC-1",
            subject_id,
            KEY_USAGE_AGREEMENT,
            (NOW + dt.timedelta(days=365)).date(),
            public,
            effective=(NOW - dt.timedelta(days=1)).date(),
        ).sign(self.ca_key)
        cid = str(uuid.uuid4())
        detail = {
            "id": cid,
            "kind": kind,
            "serial": f"{serial:X}",
            "subject": cert.subject.rfc4514_string(),
            "ca": self.ca_id,
            "status": "valid",
            "der_hex": _der(cert).hex(),
            "gp_hex": gp.to_bytes().hex(),
            "pem": _pem(cert),
            "chain_pem": [_pem(self.root), _pem(cert)],
            "issuer": {"id": self.ca_id, "name": "Fake CA"},
            "not_after": cert.not_valid_after_utc.isoformat(),
        }
        self.certificates[cid] = detail
        return detail

    def crl(self) -> bytes:
        b = x509.CertificateRevocationListBuilder().issuer_name(self.root.subject)
        b = b.last_update(NOW - dt.timedelta(hours=1)).next_update(NOW + dt.timedelta(days=7))
        for serial in self.revoked:
            b = b.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(NOW).build()
            )
        return b.sign(self.ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)

    # -- jobs --

    def _load_keys(self, params: dict[str, Any]) -> dict[str, Any]:
        package = bytes.fromhex(params["package"])
        t = Terminal(self.card).open()
        rsp = t.send(InstallForPersonalization(AID(bytes.fromhex(params["sd"]))).to_apdu())
        if rsp.sw != 0x9000:
            raise JobError(f"install_for_personalization_{rsp.sw:04X}")
        chunks = [package[i : i + 200] for i in range(0, len(package), 200)]
        for n, chunk in enumerate(chunks):
            last = n == len(chunks) - 1
            rsp = t.send(StoreData(n, chunk, last=last, response_expected=last).to_apdu())
            if rsp.sw != 0x9000:
                raise JobError(f"card_{rsp.sw:04X}")
        receipt = rsp.data[2:]
        if self.tamper_receipt:
            receipt = bytes([receipt[0] ^ 1]) + receipt[1:]
        return {"receipt": receipt.hex().upper()}

    def _run_script(self, params: dict[str, Any]) -> dict[str, Any]:
        rsp = ResponseAPDU.parse(self.card.transmit(Select(bytes.fromhex(params["sd"])).to_apdu().encode()))
        if rsp.sw != 0x9000:
            raise JobError(f"select_{rsp.sw:04X}")
        return {"responses": [self.card.transmit(bytes.fromhex(c)).hex().upper() for c in params["commands"]]}

    def _scp11_open(self, params: dict[str, Any]) -> dict[str, Any]:
        """load_keys_scp11 round 1: SELECT ISD, then the provider's PSO chain and MUTUAL AUTHENTICATE."""
        rsp = ResponseAPDU.parse(self.card.transmit(Select(None).to_apdu().encode()))
        if rsp.sw != 0x9000:
            raise JobError(f"select_{rsp.sw:04X}")
        answers = []
        for c in params["authenticate"]:
            raw = bytes.fromhex(c)
            if raw[1] not in (0x2A, 0x82):
                raise JobError("not_scp11_opening")
            answers.append(self.card.transmit(raw))
            if answers[-1][-2:] != b"\x90\x00":
                raise JobError(f"card_{answers[-1][-2:].hex().upper()}")
        return {"authenticate": [a.hex().upper() for a in answers]}

    def job_input(self, jid: str, body: dict[str, Any]) -> tuple[int, bytes, str]:
        """load_keys_scp11 round 2: the provider's commands on the same card session, no SELECT."""
        job = self.jobs.get(jid)
        if job is None or job["state"] != "awaiting_input":
            return _json(409, {"error": {"code": "not_awaiting_input", "message": "Not awaiting input."}})
        if self.reset_between_rounds:
            self.card.reset()
        responses = []
        for c in body["commands"]:
            responses.append(self.card.transmit(bytes.fromhex(c)))
            if responses[-1][-2:] != b"\x90\x00":
                break
        job["result"] = {**job["result"], "responses": [r.hex().upper() for r in responses]}
        if all(r[-2:] == b"\x90\x00" for r in responses):
            job["state"] = "succeeded"
        else:
            job.update(
                state="failed", error_code=f"card_{responses[-1][-2:].hex().upper()}", error_message=""
            )
        return _json(200, {**job, "state": "queued"})

    def run_job(self, kind: str, params: dict[str, Any]) -> dict[str, Any]:
        jid = str(uuid.uuid4())
        job: dict[str, Any] = {"id": jid, "kind": kind, "params": params, "state": "queued", "error_code": ""}
        try:
            if kind == "load_keys_confidential":
                job["result"] = self._load_keys(params)
            elif kind == "run_script":
                job["result"] = self._run_script(params)
            elif kind == "load_keys_scp11":
                job["result"] = self._scp11_open(params)
                job["state"] = "awaiting_input"
                self.jobs[jid] = job
                return {**job, "state": "queued"}
            else:
                raise JobError("unknown_kind")
            job["state"] = "succeeded"
        except JobError as e:
            job.update(state="failed", error_code=str(e), error_message="the card refused")
        self.jobs[jid] = job
        return {**job, "state": "queued"}

    # -- HTTP --

    def handle(self, method: str, path: str, token: str, body: Any) -> tuple[int, bytes, str]:
        self.requests.append((method, path, body))
        if token != TOKEN:
            return _json(401, {"error": {"code": "not_authenticated", "message": "Token required."}})
        p = path.removeprefix("/api/v1")
        org = f"/orgs/{ORG}"
        if method == "GET" and p == "/ca/":
            return _json(200, {"results": [{"id": self.ca_id, "name": "Fake CA"}]})
        if method == "GET" and p == f"/ca/{self.ca_id}/root/":
            return 200, _der(self.root), "application/pkix-cert"
        if method == "GET" and p == f"/ca/{self.ca_id}/crl/":
            return 200, self.crl(), "application/pkix-crl"
        if method == "GET" and p == f"{org}/":
            return _json(200, {"slug": ORG, "name": "Provider"})
        if method == "POST" and p == f"{org}/certificates/csr/":
            try:
                csr = x509.load_pem_x509_csr(str(body.get("csr", "")).encode())
                assert csr.is_signature_valid
            except (ValueError, AssertionError, AttributeError):
                return _json(400, {"error": {"code": "csr_malformed", "message": "The CSR does not parse."}})
            key = csr.public_key()
            assert isinstance(key, ec.EllipticCurvePublicKey)
            detail = self._issue(
                key, cn="Provider OCE", serial_number=str(uuid.uuid4()), kind="oce", subject_id=b"PROVIDER"
            )
            return _json(201, detail)
        if method == "GET" and p == f"{org}/devices/{self.device_id}/":
            sd = {"aid": bytes(SSD).hex().upper(), "key_sets": []}
            return _json(
                200,
                {
                    "id": self.device_id,
                    "secure_elements": [{"id": self.se_uuid, "serial": "SE-1", "security_domains": [sd]}],
                },
            )
        if method == "GET" and p == f"{org}/secure-elements/{self.se_uuid}/casd-certificate/":
            return _json(200, self.casd_override or self.casd_detail)
        if method == "POST" and p == f"{org}/devices/{self.device_id}/jobs/":
            return _json(201, self.run_job(body["kind"], body.get("params", {})))
        if method == "POST" and p.startswith(f"{org}/jobs/") and p.endswith("/input/"):
            return self.job_input(p.removeprefix(f"{org}/jobs/").removesuffix("/input/"), body)
        if method == "POST" and p.startswith(f"{org}/jobs/") and p.endswith("/cancel/"):
            job = self.jobs.get(p.removeprefix(f"{org}/jobs/").removesuffix("/cancel/"))
            if job is not None:
                job.update(state="canceled", error_code="canceled")
                return _json(200, job)
        if method == "GET" and p.startswith(f"{org}/jobs/"):
            job = self.jobs.get(p.removeprefix(f"{org}/jobs/").strip("/"))
            if job is not None:
                return _json(200, job)
        return _json(404, {"error": {"code": "not_found", "message": "Not found."}})

    def serve(self) -> tuple[ThreadingHTTPServer, str]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _do(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                body = json.loads(raw) if raw else None
                token = (self.headers.get("Authorization") or "").removeprefix("Token ")
                with lock:
                    status, data, ctype = fake.handle(self.command, self.path.split("?")[0], token, body)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _do

            def log_message(self, *args: Any) -> None:
                pass

        lock = threading.Lock()
        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server, f"http://127.0.0.1:{server.server_address[1]}"


class JobError(Exception):
    pass


def _json(status: int, body: Any) -> tuple[int, bytes, str]:
    return status, json.dumps(body).encode(), "application/json"
