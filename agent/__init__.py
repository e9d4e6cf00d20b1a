"""Tessera's device agent: polls the portal, relays GlobalPlatform scripts to the secure hardware.

Django-free by design (DESIGN §4): it runs on gateways that have no business carrying the portal's
dependencies. The implementation arrives with the jobs issue; this package exists so the layout
and the "no Django in the agent" guard are in place from the start.
"""
