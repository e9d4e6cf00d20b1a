"""The agent's own OCE check (agent/ocepin.py) is loaded only when a confidential envelope arrives:
the run path's modules import neither it nor X.509 or GP certificate parsing at start-up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_run_path_does_not_import_the_oce_check_at_start_up() -> None:
    code = (
        "import sys\n"
        "import agent.cli, agent.runner, agent.tokenops, agent.config, agent.transport, agent.backends.pkcs11\n"
        "print(','.join(sorted(m for m in ('agent.ocepin', 'gp.gpcert', 'cryptography.x509') if m in sys.modules)))\n"
        "import agent.ocepin\n"
        "print('gp.gpcert' in sys.modules, 'cryptography.x509' in sys.modules)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert run.returncode == 0, run.stderr
    lazy, loaded = run.stdout.splitlines()
    assert lazy == ""
    assert loaded == "False True"  # gpcert itself only once a chain is checked
