"""GlobalPlatform card management for Tessera, without Django.

- :mod:`gp.apdu` — command / response APDUs (ISO/IEC 7816-3 §12.1, GP Card Spec v2.3.1 §11.1.4).
- :mod:`gp.tlv` — BER-TLV (GP Card Spec v2.3.1 §11.1.8, Annex F).
- :mod:`gp.scp03` — Secure Channel Protocol '03' (GP Card Spec v2.3 Amendment D v1.2 §4-§7).
- :mod:`gp.commands` — typed card-management commands (GP Card Spec v2.3.1 §11).
- :mod:`gp.card` — the software Secure Element (GP Card Spec v2.3.1 §5-§11, Amendment D).
"""
