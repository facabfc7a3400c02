"""`python run.py models list|download|verify`: the model manager's command line.

Exit codes: 0 all good; 1 a download failed, was refused (HF_HUB_OFFLINE) or a file is
missing/corrupt; 2 a usage or config error (unknown model name, bad --set); 130 interrupted
(the partial download is kept and the next run resumes it).
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

from voicechat.config.loading import ConfigError, Settings, add_config_arguments, load_from_args
from voicechat.models import inventory as inventory
from voicechat.models import registry as registry
from voicechat.models import store as store
from voicechat.models.registry import ModelSpec

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

    command("list", "show the recommended models, whether they are here, and which the config uses")
    download = command("download", "download models from the Hugging Face Hub into models/ (resumable)")
    download.add_argument("names", nargs="*", metavar="NAME",
                          help="models to fetch (see `models list`); none = what the current config needs")
    download.add_argument("--all-default", action="store_true", help="fetch the whole recommended default set")
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


def _list(settings: Settings, root: Path) -> int:
    from rich.table import Table

    manifest = store.Manifest(store.models_dir(root))
    table = Table(title=f"Models in {store.models_dir(root)}")
    for column in ("Name", "Kind", "Size", "Local", "Setting", "In use"):
        table.add_column(column)
    for spec in registry.RECOMMENDED:
        state = inventory.spec_state(spec, root, manifest)
        label = spec.name + (" (optional)" if spec.optional else "") + (" *" if spec.default else "")
        table.add_row(label, spec.kind, registry.format_size(spec.size_bytes),
                      f"[{STATE_STYLE[state]}]{state}[/]", spec.settings_hint(),
                      "yes" if store.points_at(spec, settings, root) else "")
    out = _console()
    out.print(table)
    out.print("* = recommended default set (`models download --all-default`)")
    problems = store.check_models(settings, root)
    for problem in problems:
        out.print(f"[yellow]needed:[/] {problem}", markup=True)
    if not problems:
        out.print("Every model file the current config needs is present.")
    return 0


def _download(settings: Settings, root: Path, args: argparse.Namespace, endpoint: str | None) -> int:
    from voicechat.models.download import (
        DownloadError,
        RichBar,
        download_model,
        rich_progress,
    )

    out, err = _console(), _console(stderr=True)
    if args.names:
        specs = _specs_by_name(args.names)
    elif args.all_default:
        specs = [s for s in registry.RECOMMENDED if s.default]
    else:
        specs = store.needed_specs(settings, root)
        if not specs:
            out.print("The current config names no downloadable model; give names, or --all-default.")
            for problem in store.check_models(settings, root):
                err.print(f"needed: {problem}")
            return 0
    failed = 0
    for spec in specs:
        out.print(f"[bold]{spec.name}[/]: {len(spec.files)} file(s), about {registry.format_size(spec.size_bytes)}, "
                  f"from {spec.repo_id}@{spec.revision[:12]}")
        try:
            with rich_progress(err) as progress:
                outcomes = download_model(spec, root, endpoint=endpoint, force=args.force,
                                          bar_factory=functools.partial(RichBar, progress))
        except DownloadError as error:
            err.print(f"voicechat: {spec.name}: {error}", markup=False)
            failed += 1
            continue
        except KeyboardInterrupt:
            err.print(f"voicechat: interrupted; run `{store.DOWNLOAD_COMMAND} {spec.name}` again to resume")
            return 130
        for o in outcomes:
            verb = "present " if o.skipped else "fetched "
            out.print(f"  {verb} models/{o.local_path} ({registry.format_size(o.size)}): {o.checked}", markup=False)
        if not store.points_at(spec, settings, root):
            out.print(f"  to use it, set {spec.settings_hint()}", markup=False)
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


def main(argv: list[str], *, endpoint: str | None = None) -> int:
    """Entry point of `run.py models`; ``endpoint`` overrides HF_ENDPOINT (tests use a local server)."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as stop:  # --help or a usage error: argparse already printed why
        return stop.code if isinstance(stop.code, int) else 2
    root: Path = args.root.resolve()
    try:
        settings = load_from_args(args).settings
        if args.command == "list":
            return _list(settings, root)
        if args.command == "download":
            return _download(settings, root, args, endpoint)
        return _verify(settings, root, args)
    except ConfigError as error:
        print(f"voicechat: {error}", file=sys.stderr)
        return 2
