"""One plain function per CLI command: explicit arguments in, exit code out."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from tfjsbuild import api
from tfjsbuild.errors import EXIT_FAILED, EXIT_OK, UsageError
from tfjsbuild.execute import SignatureResult
from tfjsbuild.report import ConsoleReporter, print_plan, print_summary
from tfjsbuild.savedmodel import is_saved_model, read_meta_graphs


def _warn(console: Console, warnings: Sequence[str]) -> None:
    for warning in warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")


def run(
    *,
    manifests: Sequence[str],
    all_dirs: Sequence[str],
    selection: Sequence[str],
    jobs: int | None,
    force: bool,
    dry_run: bool,
    fail_fast: bool,
    json_output: bool,
    quiet: bool,
    console: Console,
    err_console: Console,
) -> int:
    reporter = ConsoleReporter(err_console if json_output else console, quiet=quiet or json_output)
    try:
        if dry_run:
            build_plan = api.plan(manifests, all_dirs=all_dirs, selection=selection, force=force)
            result = api.BuildResult(
                [p.manifest.path for p in build_plan.manifests],
                [SignatureResult(item, "skipped") for item in build_plan.items],
                0.0,
                dry_run=True,
                warnings=build_plan.warnings,
            )
            if not json_output:
                _warn(err_console, build_plan.warnings)
                print_plan(console, build_plan.items)
        else:
            result = api.build(
                manifests,
                all_dirs=all_dirs,
                selection=selection,
                jobs=jobs,
                force=force,
                fail_fast=fail_fast,
                reporter=reporter,
            )
    finally:
        reporter.close()
    if json_output:
        print(result.to_json())
    elif not dry_run:
        _warn(err_console, result.warnings)
        if not quiet:
            print_summary(console, result.results, result.seconds)
    return EXIT_OK if result.ok else EXIT_FAILED


def plan(
    *,
    manifests: Sequence[str],
    all_dirs: Sequence[str],
    selection: Sequence[str],
    force: bool,
    json_output: bool,
    console: Console,
    err_console: Console,
) -> int:
    build_plan = api.plan(manifests, all_dirs=all_dirs, selection=selection, force=force)
    if json_output:
        print(build_plan.to_json())
    else:
        _warn(err_console, build_plan.warnings)
        print_plan(console, build_plan.items)
    return EXIT_FAILED if any(item.blocked for item in build_plan.items) else EXIT_OK


def validate(*, manifests: Sequence[str], all_dirs: Sequence[str], console: Console) -> int:
    loaded = api.load_manifests(manifests, all_dirs)
    for manifest in loaded:
        count = len(manifest.models)
        console.print(f"{manifest.path}: ok ({count} model{'s' if count != 1 else ''})")
    return EXIT_OK


def clean(*, manifests: Sequence[str], all_dirs: Sequence[str], console: Console) -> int:
    removed = api.clean(manifests, all_dirs=all_dirs)
    for output in removed:
        console.print(f"removed {output}")
    console.print(
        f"Removed {len(removed)} output{'s' if len(removed) != 1 else ''} and the build state."
    )
    return EXIT_OK


def inspect(*, path: str, json_output: bool, console: Console) -> int:
    folder = Path(path)
    if not is_saved_model(folder):
        raise UsageError(f"{folder} is not a SavedModel folder (no saved_model.pb)")
    meta_graphs = read_meta_graphs(folder)
    payload: dict[str, Any] = {
        "path": str(folder),
        "meta_graphs": [
            {
                "tags": list(meta.tags),
                "signatures": [
                    {
                        "name": sig.name,
                        "inputs": [t.as_dict() for t in sig.inputs],
                        "outputs": [t.as_dict() for t in sig.outputs],
                    }
                    for sig in meta.signatures
                    if not sig.name.startswith("__")
                ],
            }
            for meta in meta_graphs
        ],
    }
    if json_output:
        print(json.dumps(payload, indent=2))
        return EXIT_OK
    console.print(f"SavedModel {folder}")
    for meta in payload["meta_graphs"]:
        console.print(f"  tags: {', '.join(meta['tags']) or '(none)'}")
        for sig in meta["signatures"]:
            console.print(f"    signature [bold]{sig['name']}[/bold]")
            for side in ("inputs", "outputs"):
                for tensor in sig[side]:
                    shape = "unknown rank" if tensor["shape"] is None else _shape(tensor["shape"])
                    console.print(
                        f"      {side[:-1]:<6} {tensor['name']}: {tensor['dtype']} {shape}"
                    )
    return EXIT_OK


def _shape(shape: Sequence[int | None]) -> str:
    return "[" + ", ".join("?" if dim is None else str(dim) for dim in shape) + "]"


def not_implemented(command: str, *, console: Console) -> int:
    raise UsageError(f"`tfjs-build {command}` is not implemented yet in this version")


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()
