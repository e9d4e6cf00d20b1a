"""A private SoftHSMv2 for the token-layer tests: its own softhsm2.conf and token directory.

The library reads ``SOFTHSM2_CONF`` when it is initialised, once per process; this fixture
re-initialises it after creating its tokens and hands it back after this package (package scope), so other packages
using their own SoftHSM (tests/keys) start from a clean library.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import service_unavailable
from tests.support.softhsm import SoftHsm, softhsm_library

TOKENS = ("agent", "gateway", "tee-only")


@dataclass
class Hsm:
    hsm: SoftHsm
    token: Any  # agent.pkcs11.token.Token on "agent", identity and receive keys created

    @property
    def library(self) -> str:
        return self.hsm.library


@pytest.fixture(scope="package")
def softhsm_agent(tmp_path_factory: Any) -> Iterator[Hsm]:
    library = softhsm_library()
    if library is None:
        service_unavailable("SoftHSMv2 is not installed (apt-get install softhsm2)")
    assert library is not None
    from agent.pkcs11.runtime import close_tokens
    from agent.pkcs11.token import _library, finalize_libraries, open_token

    hsm = SoftHsm.create(library, tmp_path_factory.mktemp("softhsm-agent"))
    for label in TOKENS:
        hsm.init_token(label)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOFTHSM2_CONF", str(hsm.conf))
        _library(library).reinitialize()  # another package may have initialised it with its own conf
        token = open_token(library, "agent", pin=hsm.pin)
        token.create_identity(replace=True)
        token.create_receive_key()
        try:
            yield Hsm(hsm, token)
        finally:
            token.close()
            close_tokens()
    # Hand the library back: to the SoftHSM another package configured before us (its sessions are
    # lost and re-opened by their owner), or uninitialised for the next one.
    if os.environ.get("SOFTHSM2_CONF"):
        _library(library).reinitialize()
    else:
        finalize_libraries()
