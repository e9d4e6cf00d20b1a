"""What an idle gateway agent loads (bench/README.md, ``agent_tee``: idle RSS under 40 MiB): no
httpx / certifi, no asn1crypto behind python-pkcs11, no HTTP server modules without ``[localapi]`` —
checked in a fresh interpreter of the project's virtualenv, where all of those are installed."""

from __future__ import annotations

import subprocess
import sys

from tests.agent_packaging.conftest import agent_env

_CODE = """
import sys
import agent.cli, agent.runner, agent.transport, agent.cardaccess, agent.journal, agent.doctor
import agent.backends.soft
from agent.pkcs11.token import _pkcs11
pkcs11 = _pkcs11()
heavy = {"httpx", "httpcore", "anyio", "certifi", "h11", "asn1crypto", "http.server", "socketserver",
         "agent.localapi"}
loaded = sorted(heavy & set(sys.modules))
assert not loaded, loaded
# The deferred python-pkcs11 helpers are the genuine ones on first use.
from pkcs11.util.ec import encode_named_curve_parameters
assert encode_named_curve_parameters("secp256r1").hex() == "06082a8648ce3d030107"
assert pkcs11.util.ec.encode_named_curve_parameters is encode_named_curve_parameters
assert "asn1crypto" in sys.modules
from pkcs11.util import rsa, x509
assert callable(rsa.encode_rsa_public_key) and callable(x509.decode_x509_certificate)
import agent.localapi
assert agent.localapi.CardAccess is agent.cardaccess.CardAccess
print("ok")
"""


def test_an_idle_agent_loads_none_of_the_heavy_optional_modules() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _CODE], capture_output=True, text=True, timeout=120, env=agent_env()
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stdout + out.stderr
