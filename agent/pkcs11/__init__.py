"""The agent's PKCS#11 token layer (OP-TEE's PKCS#11 TA through libckteec; SoftHSMv2 in tests).

- :mod:`agent.pkcs11.token` — :func:`open_token`, :class:`Token` (identity signer, key reception,
  received keys, session keys, the soft SE's state key, the start-up probe);
- :mod:`agent.pkcs11.profile` — the OP-TEE profile every call goes through.

The sender's side of key reception is :mod:`gp.tokenwrap`; docs/tee-bridge.md describes both.
"""
