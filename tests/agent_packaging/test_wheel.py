"""The agent ships as a wheel of its own (packaging/agent): ``pip install`` of it pulls no Django.

The wheel is built from the repository with pip (the build backend, hatchling, comes from the
package index like any build dependency), then installed into a brand-new virtualenv — no system
site-packages, the repository not on the path — with the dependencies it declares resolved by pip.
"""

from __future__ import annotations

import email
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import agent

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ROOT / "packaging" / "agent"


def _pip(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = _pip("wheel", "--no-deps", "--quiet", "--wheel-dir", str(out), str(PROJECT))
    assert build.returncode == 0, build.stdout + build.stderr
    wheels = list(out.glob("tessera_agent-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def _sources(package: str) -> set[str]:
    return {
        p.relative_to(ROOT).as_posix() for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts
    }


def test_the_wheel_holds_the_agent_and_gp_and_declares_its_dependencies(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        metadata = email.message_from_bytes(
            z.read(next(n for n in names if n.endswith(".dist-info/METADATA")))
        )
        entry_points = z.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    files = {n for n in names if ".dist-info/" not in n}
    assert files == _sources("agent") | _sources("gp")  # everything the agent imports, nothing else
    assert metadata["Name"] == "tessera-agent"
    assert metadata["Version"] == agent.__version__
    requires = metadata.get_all("Requires-Dist") or []
    plain = sorted(r.split(">")[0].split("=")[0].strip() for r in requires if "extra ==" not in r)
    assert plain == ["cryptography"], requires  # HTTP is the stdlib's (agent.transport)
    extras = {
        r.split("extra ==")[1].strip().strip("'\""): r.split(">")[0] for r in requires if "extra ==" in r
    }
    assert extras == {"pcsc": "pyscard", "pkcs11": "python-pkcs11"}, requires
    assert not any("django" in r.lower() for r in requires)
    assert "tessera-agent = agent.cli:main" in entry_points


def test_installed_in_a_fresh_virtualenv_it_runs_without_django(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    made = subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    install = _pip("--python", str(python), "install", "--quiet", str(wheel))
    assert install.returncode == 0, install.stdout + install.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DJANGO_SETTINGS_MODULE")}
    work = tmp_path / "gateway"
    work.mkdir()  # not the repository: only the installed wheel is importable

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=work, env=env)

    code = (
        "import importlib, importlib.metadata as md, pkgutil, sys\n"
        "import agent, gp\n"
        "assert agent.__file__.startswith(sys.prefix), agent.__file__\n"
        "names = [m.name for m in pkgutil.walk_packages(agent.__path__, 'agent.') if not m.name.endswith('__main__')]\n"
        "names += [m.name for m in pkgutil.walk_packages(gp.__path__, 'gp.')]\n"
        "optional = {'agent.backends.pcsc', 'agent.backends.pkcs11'}\n"
        "for name in names:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ImportError as e:\n"
        "        if name not in optional and not name.startswith('agent.pkcs11'):\n"
        "            raise\n"
        "import agent.runner, agent.doctor, agent.transport, agent.backends.soft\n"
        "dists = sorted(d.metadata['Name'].lower() for d in md.distributions())\n"
        "assert 'django' not in dists, dists\n"
        "assert not any(m == 'django' or m.startswith('django.') for m in sys.modules)\n"
        "print(len(names), ','.join(dists))\n"
    )
    checked = run(str(python), "-c", code)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    count, dists = checked.stdout.split()
    assert int(count) > 40
    assert {"tessera-agent", "cryptography"} <= set(dists.split(","))
    assert "httpx" not in dists.split(",") and "certifi" not in dists.split(",")

    helped = run(str(python), "-m", "agent", "--help")
    assert helped.returncode == 0 and "doctor" in helped.stdout, helped.stderr
    script = run(str(venv / "bin" / "tessera-agent"), "doctor", "--help")
    assert script.returncode == 0 and "--max-skew" in script.stdout, script.stderr

    # The installed agent provisions a gateway (soft SE from the wheel's gp) and checks it.
    init = run(str(python), "-m", "agent", "init", "--config", str(work / "agent.toml"),
               "--server", "http://127.0.0.1:9", "--serial", "GW-WHEEL-1")  # fmt: skip
    assert init.returncode == 0, init.stderr
    doctor = run(str(venv / "bin" / "tessera-agent"), "doctor", "--config", str(work / "agent.toml"))
    assert doctor.returncode == 6, doctor.stdout + doctor.stderr  # nothing listens on port 9
    assert "[ OK ] config" in doctor.stdout and "[FAIL] reachability" in doctor.stdout
    assert "[ OK ] backend" in doctor.stdout
