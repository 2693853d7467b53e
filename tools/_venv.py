"""Run host tools inside the project's virtual environment, creating it on first use.

`ensure()` is called first thing by every tool: on a fresh machine it creates `.venv`, installs
the pinned `requirements.txt` and re-runs the tool with the environment's interpreter, so a person
needs nothing but Python 3 installed.
"""
import hashlib
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, ".venv")
PY = os.path.join(VENV, "bin", "python")
REQS = os.path.join(ROOT, "requirements.txt")
STAMP = os.path.join(VENV, ".requirements.sha256")


def _digest():
    with open(REQS, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _ready():
    if not os.path.exists(PY) or not os.path.exists(STAMP):
        return False
    with open(STAMP) as f:
        return f.read().strip() == _digest()


def ensure():
    """Make sure the venv is installed and we run in it; re-executes the tool when needed."""
    if not _ready():
        print("setting up %s (first run only) ..." % VENV, file=sys.stderr)
        if not os.path.exists(PY):
            subprocess.check_call([sys.executable, "-m", "venv", VENV])
        subprocess.check_call([PY, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", REQS])
        with open(STAMP, "w") as f:
            f.write(_digest())
    if os.path.realpath(sys.prefix) != os.path.realpath(VENV):
        os.execv(PY, [PY] + sys.argv)


def bin_path(name):
    return os.path.join(VENV, "bin", name)
