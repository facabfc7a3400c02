#!/usr/bin/env python3
"""voicechat launcher: ``python3 run.py [ARGS...]`` == ``python -m voicechat [ARGS...]``.

Standard library only. Sets up the environment first (Debian packages,
``.venv``, Python dependencies; see ``voicechat/bootstrap.py``) and re-executes
inside the venv. ``VOICECHAT_SKIP_BOOTSTRAP=1`` runs in the current interpreter.
"""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent


def load_bootstrap() -> ModuleType:
    """Load voicechat/bootstrap.py without importing the voicechat package."""
    path = ROOT / "voicechat" / "bootstrap.py"
    spec = importlib.util.spec_from_file_location("_voicechat_bootstrap", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    """Bootstrap if needed, otherwise run the CLI in this interpreter."""
    if sys.version_info < (3, 10):  # noqa: UP036 - run.py may be started by any python3
        sys.stderr.write("voicechat needs Python >= 3.10\n")
        return 1
    args = sys.argv[1:]
    bootstrap = load_bootstrap()
    ready = bootstrap.in_project_venv() and bootstrap.stamp_current()
    if not (ready or bootstrap.skip_requested()):
        bootstrap.ensure(args)  # execs the venv python; does not return
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from voicechat.cli import main as cli_main

    return int(cli_main(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
