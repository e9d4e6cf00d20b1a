"""Tessera's device agent: polls the portal, relays GlobalPlatform scripts to the secure hardware.

Django-free by design (DESIGN §4): it runs on gateways that have no business carrying the portal's
dependencies (a test imports every module in a fresh interpreter and checks). A small typed library
with a CLI on top (STYLE habit 11):

- :mod:`agent.protocol` — the wire format of ``/agent/v1/`` (shared with the portal);
- :mod:`agent.httpsig` — RFC 9421 request signatures (shared with the portal);
- :mod:`agent.config` — the TOML configuration; :mod:`agent.errors` — the exception hierarchy;
- :mod:`agent.transport` — signed HTTP exchange; :mod:`agent.journal` — the crash-safe journal;
- :mod:`agent.backends` — the secure element (software card or PC/SC reader);
- :mod:`agent.runner` — the poll loop; :mod:`agent.cli` — ``python -m agent``.
"""

__version__ = "0.1.0"
