"""Environment bootstrap for ``python3 run.py`` (standard library only).

Makes sure the Debian packages, the project's ``.venv`` and its Python
dependencies exist, then re-executes ``python -m voicechat`` inside the venv.
This module must stay importable without any third-party package.

Environment variables:
  VOICECHAT_SKIP_BOOTSTRAP=1   skip everything, run in the current interpreter
  VOICECHAT_EXTRAS=gpu,server  extra ``setup.cfg`` extras to install
  VOICECHAT_BROWSER_TESTS=1    also require chromium (Playwright tests)
  VOICECHAT_SERVICE_TESTS=1    also require redis-server and haproxy (the remote layout's tests)
  CMAKE_ARGS                   passed through to the llama-cpp-python build
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
STAMP = VENV / ".voicechat-installed"
CONSTRAINTS = ROOT / ".ci" / "constraints.txt"
HASHED_FILES = ("setup.cfg", "pyproject.toml", ".ci/constraints.txt")
TORCH_PIN = "torch==2.13.0"  # keep in sync with .ci/constraints.txt

# Debian packages: audio/TTS runtime, tooling, and the llama-cpp-python build.
APT_PACKAGES: list[str] = [
    "espeak-ng",
    "libportaudio2",
    "libspeexdsp1",
    "portaudio19-dev",
    "sox",
    "tmux",
    "build-essential",
    "cmake",
    "git",
]
BROWSER_PACKAGES: list[str] = ["chromium", "fonts-dejavu-core"]  # a font, or screenshots show boxes
# The remote layout (docs/deploy.md) runs these beside voicechat; only its tests need them here, and on a
# user's machine Debian would also start them as system services, so they are asked for only then.
SERVICE_PACKAGES: list[str] = ["redis-server", "haproxy"]
BUILD_TOOLS = ("gcc", "g++", "cmake")


def log(msg: str) -> None:
    """Print one progress line to stderr."""
    print(f"voicechat setup: {msg}", file=sys.stderr, flush=True)


def skip_requested() -> bool:
    """True when VOICECHAT_SKIP_BOOTSTRAP=1 is set."""
    return os.environ.get("VOICECHAT_SKIP_BOOTSTRAP", "") == "1"


def venv_python() -> Path:
    """Path of the venv's interpreter."""
    if os.name == "nt":
        return VENV / "Scripts" / "python.exe"
    return VENV / "bin" / "python"


def in_project_venv() -> bool:
    """True when the running interpreter is the project's .venv python."""
    try:
        return Path(sys.prefix).resolve() == VENV.resolve()
    except OSError:
        return False


def extras() -> list[str]:
    """Extras to install: always ``test``, plus VOICECHAT_EXTRAS."""
    wanted = ["test"]
    for name in os.environ.get("VOICECHAT_EXTRAS", "").split(","):
        name = name.strip()
        if name and name not in wanted:
            if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
                raise SystemExit(f"voicechat setup: bad extra name {name!r}")
            wanted.append(name)
    return wanted


def install_hash() -> str:
    """Hash of the dependency metadata and chosen extras."""
    digest = hashlib.sha256()
    for rel in HASHED_FILES:
        path = ROOT / rel
        digest.update(rel.encode() + b"\0")
        digest.update(path.read_bytes() if path.is_file() else b"<missing>")
        digest.update(b"\0")
    digest.update(",".join(extras()).encode())
    return digest.hexdigest()


def stamp_current() -> bool:
    """True when the venv exists and its stamp matches the current hash."""
    try:
        ok = STAMP.read_text().strip() == install_hash()
    except OSError:
        return False
    return ok and venv_python().exists()


def run(cmd: list[str], env: dict[str, str] | None = None) -> None:
    """Run a command in the repo root (output to stderr); exit if it fails."""
    sys.stdout.flush()
    result = subprocess.run(cmd, env=env, cwd=ROOT, stdout=sys.stderr, check=False)
    if result.returncode != 0:
        log(f"command failed ({result.returncode}): {' '.join(cmd)}")
        raise SystemExit(result.returncode or 1)


def wanted_packages() -> list[str]:
    """Debian packages required for this run."""
    names = list(APT_PACKAGES)
    if os.environ.get("VOICECHAT_BROWSER_TESTS", "") == "1":
        names += BROWSER_PACKAGES
    if os.environ.get("VOICECHAT_SERVICE_TESTS", "") == "1":
        names += SERVICE_PACKAGES
    try:
        import ensurepip  # noqa: F401  (Debian splits it into python3-venv)
    except ImportError:
        names.append("python3-venv")
    return names


def is_installed(name: str) -> bool:
    """Ask dpkg whether a package is installed."""
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", name],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode == 0 and result.stdout.strip() == "install ok installed"


def ensure_system_packages() -> None:
    """Step 1: install missing Debian packages (or say how to)."""
    names = wanted_packages()
    if shutil.which("dpkg-query") is None:
        log(f"not a Debian system; expected system packages: {' '.join(names)}")
    else:
        missing = [n for n in names if not is_installed(n)]
        if not missing:
            log("system packages ok")
        elif os.geteuid() == 0 and shutil.which("apt-get"):
            log(f"installing system packages: {' '.join(missing)}")
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            run(["apt-get", "update"], env=env)
            run(["apt-get", "install", "-y", "--no-install-recommends", *missing], env=env)
        else:
            log("missing system packages, please run:")
            print(f"sudo apt-get install -y {' '.join(missing)}", file=sys.stderr, flush=True)
            raise SystemExit(1)
    absent = [tool for tool in BUILD_TOOLS if shutil.which(tool) is None]
    if absent:
        log(f"warning: {', '.join(absent)} not found; building llama-cpp-python will fail")


def ensure_venv() -> bool:
    """Step 2: create .venv if missing; upgrade pip & co the first time."""
    py = str(venv_python())
    created = not venv_python().exists()
    if created:
        log(f"creating virtual environment in {VENV}")
        run([sys.executable, "-m", "venv", str(VENV)])
    else:
        log(f"using virtual environment {VENV}")
    if created or not STAMP.exists():
        log("upgrading pip, setuptools and wheel")
        run([py, "-m", "pip", "install", "--upgrade", "pip", "setuptools", "wheel"])
    return created


def has_dist(name: str) -> bool:
    """True when the venv already has the given distribution installed."""
    code = f"import importlib.metadata as m; m.version({name!r})"
    result = subprocess.run([str(venv_python()), "-c", code], capture_output=True, check=False)
    return result.returncode == 0


def install_dependencies() -> None:
    """Step 3: install torch (pinned) and the project with its extras."""
    py = str(venv_python())
    env = dict(os.environ)
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 1))
    pip = [py, "-m", "pip", "install"]
    log(f"installing {TORCH_PIN}")
    run([*pip, TORCH_PIN], env=env)
    if not has_dist("llama-cpp-python"):
        log("llama-cpp-python may compile from source: about 10 minutes on 2 cores")
    spec = f".[{','.join(extras())}]"
    log(f"installing voicechat dependencies: -e {spec}")
    run([*pip, "-c", str(CONSTRAINTS), "-e", spec], env=env)


def write_stamp() -> None:
    """Step 4: record what was installed so later runs can skip 2-3."""
    STAMP.write_text(install_hash() + "\n")
    log(f"install stamp written ({STAMP.name})")


def ensure(args: list[str]) -> NoReturn:
    """Run every setup step, then exec ``python -m voicechat ARGS`` in the venv."""
    ensure_system_packages()
    if stamp_current():
        log("python environment up to date")
    else:
        ensure_venv()
        install_dependencies()
        write_stamp()
    py = str(venv_python())
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(py, [py, "-m", "voicechat", *args])


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m voicechat.bootstrap [ARGS]``."""
    if skip_requested():
        log("VOICECHAT_SKIP_BOOTSTRAP=1, nothing to do")
        return 0
    ensure(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    raise SystemExit(main())
