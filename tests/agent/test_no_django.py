"""The agent runs on gateways without Django: importing all of it in a fresh interpreter loads none."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import agent

ROOT = Path(__file__).resolve().parents[2]


def test_importing_every_agent_module_loads_no_django() -> None:
    modules = sorted(
        m.name
        for m in pkgutil.walk_packages(agent.__path__, prefix="agent.")
        if not m.name.endswith("__main__")
    )
    assert {"agent.protocol", "agent.httpsig", "agent.runner", "agent.backends.pcsc"} <= set(modules)
    code = (
        "import importlib, sys\n"
        f"for name in {['agent', *modules]!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m == 'django' or m.startswith(('django.', 'portal', 'rest_framework')))\n"
        "print(','.join(bad))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == ""


def test_the_modules_the_portal_imports_need_only_the_stdlib_and_cryptography() -> None:
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import agent.protocol, agent.httpsig\n"
        "new = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "print(','.join(sorted(new - set(sys.stdlib_module_names) - {'agent', 'cryptography', '_cffi_backend', '_openssl'})))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == ""
