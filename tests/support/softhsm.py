"""SoftHSMv2 tokens for tests: a private softhsm2.conf and token directory, never the system's.

``SOFTHSM2_CONF`` is read when the library is initialised (once per process), so a test process
uses one ``SoftHsm`` for its whole run; tests tell their keys apart by label. Subprocesses get
the same conf through ``SoftHsm.env()``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

LIBRARY_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)


def softhsm_library() -> str | None:
    """The SoftHSMv2 module, if installed with its ``softhsm2-util``."""
    if shutil.which("softhsm2-util") is None:
        return None
    return next((p for p in LIBRARY_CANDIDATES if Path(p).is_file()), None)


@dataclass
class SoftHsm:
    library: str
    directory: Path
    pin: str = field(default_factory=lambda: secrets.token_hex(4))
    so_pin: str = field(default_factory=lambda: secrets.token_hex(4))
    tokens: list[str] = field(default_factory=list)

    @property
    def conf(self) -> Path:
        return self.directory / "softhsm2.conf"

    @classmethod
    def create(cls, library: str, directory: Path) -> SoftHsm:
        (directory / "tokens").mkdir(parents=True, exist_ok=True)
        hsm = cls(library=library, directory=directory)
        hsm.conf.write_text(
            f"directories.tokendir = {directory / 'tokens'}\n"
            "objectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n"
        )
        return hsm

    def init_token(self, label: str) -> None:
        """A fresh token in the next free slot (before the library is loaded in this process)."""
        subprocess.run(
            [
                "softhsm2-util",
                "--init-token",
                "--free",
                "--label",
                label,
                "--so-pin",
                self.so_pin,
                "--pin",
                self.pin,
            ],  # fmt: skip
            env={**os.environ, "SOFTHSM2_CONF": str(self.conf)},
            check=True,
            capture_output=True,
            timeout=60,
        )
        self.tokens.append(label)

    def env(
        self, token: str | None = None, *, prefix: str = "TESSERA_PKCS11_", key_label: str = ""
    ) -> dict[str, str]:
        """Variables for a process using ``token`` (default: the first), and the conf it needs."""
        env = {
            "SOFTHSM2_CONF": str(self.conf),
            f"{prefix}LIBRARY": self.library,
            f"{prefix}TOKEN": token or self.tokens[0],
            f"{prefix}PIN": self.pin,
        }
        if key_label:
            env[f"{prefix}KEY_LABEL"] = key_label
        return env
