"""Fixtures of this test package."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import service_unavailable
from tests.support.fixtures import fast_password_hasher  # noqa: F401
from tests.support.softhsm import SoftHsm, softhsm_library


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: Any) -> Iterator[SoftHsm]:
    """A private SoftHSMv2 with two tokens ("vault", "other") for this test process.

    Absent SoftHSMv2 skips — or fails under TESSERA_REQUIRE_SERVICES=1.
    """
    library = softhsm_library()
    if library is None:
        service_unavailable("SoftHSMv2 is not installed (apt-get install softhsm2)")
    assert library is not None
    hsm = SoftHsm.create(library, tmp_path_factory.mktemp("softhsm"))
    hsm.init_token("vault")
    hsm.init_token("other")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOFTHSM2_CONF", str(hsm.conf))
        yield hsm
