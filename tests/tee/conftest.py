"""A TEE-backed gateway in process: a private SoftHSMv2 token (the TEE), its agent's token
operations run on it, signed exchanges with the token's identity key against the portal's test
client (Celery eager); and the world of organisations around it (tests/jobs/conftest.py's)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from agent import tokenops
from agent.httpsig import sign_request
from agent.protocol import (
    EXCHANGE_PATH,
    KIND_TOKEN_OPS,
    WorkResult,
)
from tests.conftest import service_unavailable
from tests.jobs.gateway import ExchangeLoop
from tests.support.parties import Parties, job_parties
from tests.support.softhsm import SoftHsm, softhsm_library

TOKENS = ("tee-a", "tee-b")
ISD_AID = "A000000151000000"


@pytest.fixture(scope="package")
def softhsm_tee(tmp_path_factory: Any) -> Iterator[dict[str, Any]]:
    """One private SoftHSM for the package; the library handed back afterwards (as tests/agent_pkcs11)."""
    library = softhsm_library()
    if library is None:
        service_unavailable("SoftHSMv2 is not installed (apt-get install softhsm2)")
    assert library is not None
    from agent.pkcs11.token import _library, finalize_libraries, open_token

    hsm = SoftHsm.create(library, tmp_path_factory.mktemp("softhsm-tee"))
    for label in TOKENS:
        hsm.init_token(label)
    tokens = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOFTHSM2_CONF", str(hsm.conf))
        _library(library).reinitialize()
        for label in TOKENS:
            token = open_token(library, label, pin=hsm.pin)
            token.create_identity(replace=True)
            token.create_receive_key()
            tokens[label] = token
        try:
            yield {"hsm": hsm, "tokens": tokens}
        finally:
            for token in tokens.values():
                token.close()
    if os.environ.get("SOFTHSM2_CONF"):
        _library(library).reinitialize()
    else:
        finalize_libraries()


@pytest.fixture
def token(softhsm_tee: dict[str, Any]) -> Iterator[Any]:
    """The "tee-a" token, with no SD key left over from another test."""
    tok = softhsm_tee["tokens"]["tee-a"]
    for key in tok.list_keys("tessera/sd/"):
        tok.delete_key(key.label)
    yield tok


@dataclass
class TeeGateway(ExchangeLoop):
    """The agent's side in process: signs with the token's identity, runs token operations on it."""

    token: Any
    pending: list[WorkResult] = field(default_factory=list)
    ops_run: list[str] = field(default_factory=list)
    drop_next: bool = False  # report the next item interrupted after its first operation (a crash)
    oce_root: Any = None  # the CA root pinned at enrolment (agent.ocepin.PinnedRoot), if any

    @property
    def public_pem(self) -> str:
        return (
            self.token.identity_public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )

    def agent_info(self) -> dict[str, Any]:
        return {"version": "test", "backend": "pkcs11", **self.token.identifiers()}

    def post(self, client: Any, body: bytes) -> Any:
        headers = sign_request(
            private_key=self.token.identity_signer(), method="POST", path=EXCHANGE_PATH, body=body
        )
        return client.post(EXCHANGE_PATH, data=body, content_type="application/json", headers=headers)

    def perform(self, item: Any) -> WorkResult:
        """Run the item's token operations on the token, stopping at the first that fails."""
        assert item.kind == KIND_TOKEN_OPS
        responses: list[bytes] = []
        status = "completed"
        for index, command in enumerate(item.commands):
            result = tokenops.execute(self.token, command.apdu, oce_root=lambda: self.oce_root)
            self.ops_run.append(f"{tokenops.decode_op(command.apdu)['op']}:{result.outcome}")
            responses.append(result.encode())
            if self.drop_next and index == 0:
                status = "interrupted"
                self.drop_next = False
                break
            if not result.ok:
                status = "failed"
                break
        return WorkResult(item=item.item, status=status, responses=tuple(responses))


@dataclass
class TeeWorld(Parties):
    device: Any
    se: Any
    gateway: TeeGateway
    oce_key: Any = None
    oce_chain: list[str] = field(default_factory=list)

    def confidential(
        self, envelope: Any, kcv: str, *, key: Any = None, device_id: bytes | None = None
    ) -> dict:
        """load_keys_confidential params: the envelope signed by the provider's OCE key for this device."""
        signature = tokenops.sign_envelope(
            key or self.oce_key, envelope, device_id or self.gateway.token.device_id()
        )
        return {
            "sd": envelope.label.split("/")[2],
            "envelope": envelope.to_json(),
            "kcv": kcv,
            "certificates": list(self.oce_chain),
            "signature": signature,
        }


@pytest.fixture
def teeworld(transactional_db: Any, settings: Any, monkeypatch: Any, token: Any) -> TeeWorld:
    from devices.services import device_register
    from keys.handover import secure_element_casd_record
    from keys.services import secure_element_enrol

    p = job_parties(settings, monkeypatch)
    gateway = TeeGateway(token)
    serial = token.device_id().hex().upper()
    device = device_register(
        actor=p.sei_actor,
        serial="GW-TEE-1",
        kind="medical_gateway",
        identity_public_key=gateway.public_pem,
        se_issuer="sei",
        se_serial=serial,
    )
    enrolment = secure_element_enrol(  # a TEE: no ISD key set
        actor=p.sei_actor,
        serial=serial,
        kind="tee",
        isd_aid=ISD_AID,
        device_manufacturer="sei",
        device_serial="GW-TEE-1",
    )
    from keys.handover import casd_public_key_der

    secure_element_casd_record(
        actor=p.sei_actor,
        secure_element=enrolment.secure_element,
        casd_der=casd_public_key_der(token.receive_public_point().hex()),
    )
    # The CA certifies the token's receive key (as an SE's CASD key); the provider has an OCE key.
    from keys import ca as ca_services
    from tests.support.ca import ca_actor, make_ca, make_csr

    ca_services.casd_certify(
        actor=ca_actor(),
        secure_element=enrolment.secure_element,
        public_key=token.receive_public_point(),
        ca=make_ca(),
    )
    oce_key, csr = make_csr()
    oce = ca_services.oce_request(actor=p.provider_actor, csr_pem=csr)
    device.refresh_from_db()
    return TeeWorld(
        **vars(p),
        device=device,
        se=enrolment.secure_element,
        gateway=gateway,
        oce_key=oce_key,
        oce_chain=[bytes(oce.gp_der).hex().upper()],
    )
