"""The portal accepts an agent exchange signed by the identity key in the token (RFC 9421, raw CKM_ECDSA)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from django.test import Client

from agent.httpsig import key_id, sign_request
from agent.protocol import EXCHANGE_PATH, ExchangeRequest, encode
from tests import factories as f
from tests.support.fixtures import fast_password_hasher  # noqa: F401

pytestmark = pytest.mark.services


def _body(token: Any) -> bytes:
    agent = {"version": "test", "backend": "pkcs11", **token.identifiers()}
    return encode(ExchangeRequest(agent=agent, results=(), health={}).to_json())


def test_the_portal_accepts_requests_signed_by_the_token_key_and_refuses_a_replay(
    transactional_db, softhsm_agent
):
    from devices.services import device_register
    from tenants.access import Actor
    from tenants.models import MemberRole, OrgRole

    signer = softhsm_agent.token.identity_signer()
    org = f.OrganisationFactory(slug="tee-maker", roles=[OrgRole.SE_ISSUER, OrgRole.DEVICE_MANUFACTURER])
    user = f.MembershipFactory(org=org, user=f.UserFactory(username="tee-maker"), role=MemberRole.OWNER).user
    pem = signer.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    device_register(
        actor=Actor(user=user, org=org, member_role=MemberRole.OWNER),
        serial="GW-TEE-1",
        kind="meter",
        identity_public_key=pem.decode(),
        key_id=key_id(signer.public_key()),
    )
    body = _body(softhsm_agent.token)
    headers = sign_request(private_key=signer, method="POST", path=EXCHANGE_PATH, body=body)

    response = Client().post(EXCHANGE_PATH, data=body, content_type="application/json", headers=headers)
    assert response.status_code == 200, response.content
    assert json.loads(response.content)["work"] == []

    again = Client().post(EXCHANGE_PATH, data=body, content_type="application/json", headers=headers)
    assert (again.status_code, json.loads(again.content)["error"]["code"]) == (401, "replayed")
