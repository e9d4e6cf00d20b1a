"""An in-process simulated gateway for job-engine tests: a software SE, a device identity key and a
tiny agent loop that signs exchanges exactly like the real agent (agent.httpsig / agent.protocol)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agent.httpsig import sign_request
from agent.protocol import (
    EXCHANGE_PATH,
    ExchangeRequest,
    ExchangeResponse,
    WorkResult,
    decode,
    encode,
    sw_matches,
)
from gp.card import SoftCard
from gp.scp03 import StaticKeys

ISD_AID = "A000000151000000"


class ExchangeLoop:
    """The agent loop the in-process gateways share: report the pending results, forget those the
    portal acknowledges, run the work it hands out. A gateway says who it is (``agent_info``), how
    it posts a signed body (``post``) and how it runs one work item (``perform``)."""

    pending: list[WorkResult]

    def agent_info(self) -> dict[str, Any]:
        raise NotImplementedError

    def post(self, client: Any, body: bytes) -> Any:
        raise NotImplementedError

    def perform(self, item: Any) -> WorkResult:
        raise NotImplementedError

    def exchange(self, client: Any) -> ExchangeResponse:
        request = ExchangeRequest(agent=self.agent_info(), results=tuple(self.pending), health={})
        response = self.post(client, encode(request.to_json()))
        assert response.status_code == 200, response.content
        answer = ExchangeResponse.from_json(decode(response.content))
        acked = set(answer.acks)
        self.pending = [r for r in self.pending if r.item not in acked]
        for item in answer.work:
            self.pending.append(self.perform(item))
        return answer

    def run(self, client: Any, rounds: int = 30) -> int:
        """Poll until an answer brings no work and nothing is left to report. Returns rounds used."""
        for n in range(1, rounds + 1):
            answer = self.exchange(client)
            if not answer.work and not self.pending:
                return n
        raise AssertionError("the gateway kept receiving work")


@dataclass
class Gateway(ExchangeLoop):
    key: ec.EllipticCurvePrivateKey
    card: SoftCard
    isd_keys: StaticKeys
    pending: list[WorkResult] = field(default_factory=list)
    executed: list[bytes] = field(default_factory=list)

    @classmethod
    def create(cls, path: str | None = None) -> Gateway:
        keys = StaticKeys(enc=os.urandom(16), mac=os.urandom(16), dek=os.urandom(16))
        card = SoftCard.create(
            path,
            isd_aid=bytes.fromhex(ISD_AID),
            keys=keys,
            key_version=0x30,
            i_param=0x70,
            sequence_counter=1,
        )
        return cls(key=ec.generate_private_key(ec.SECP256R1()), card=card, isd_keys=keys)

    @property
    def public_pem(self) -> str:
        return (
            self.key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )

    def signed(self, body: bytes, **overrides: Any) -> dict[str, str]:
        headers = sign_request(
            private_key=self.key, method="POST", path=EXCHANGE_PATH, body=body, **overrides
        )
        return headers

    def post(self, client: Any, body: bytes, headers: dict[str, str] | None = None) -> Any:
        headers = headers if headers is not None else self.signed(body)
        return client.post(EXCHANGE_PATH, data=body, content_type="application/json", headers=headers)

    def agent_info(self) -> dict[str, Any]:
        return {"version": "test", "backend": "soft"}

    def perform(self, item: Any) -> WorkResult:
        """Transmit the item's commands to the soft card, stopping at the first unexpected status."""
        responses: list[bytes] = []
        status = "completed"
        for command in item.commands:
            self.executed.append(command.apdu)
            rapdu = self.card.transmit(command.apdu)
            responses.append(rapdu)
            sw = int.from_bytes(rapdu[-2:], "big")
            if command.expect and not sw_matches(sw, command.expect):
                status = "failed"
                break
        return WorkResult(item=item.item, status=status, responses=tuple(responses))
