"""Tessera's provider tooling: a key store the provider keeps to itself, and a client of Tessera's
public REST API only (no Django). ``python -m sdk`` / ``tessera-provider``; see :mod:`sdk.cli`
and ``docs/provider-sdk.md``."""
