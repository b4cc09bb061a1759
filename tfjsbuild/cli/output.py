"""Where a command writes: the consoles and the --json stream `main` hands every handler.

The handlers print through these only, so `main` decides once what reaches stdout (see
`streams.py`). Nothing here formats results: that is `tfjsbuild.render`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

from rich.console import Console
from rich.markup import escape


@dataclass(frozen=True)
class Output:
    console: Console
    err_console: Console
    # The real stdout while --json holds it (`streams.stdout_reserved`); None is sys.stdout.
    json_out: TextIO | None = None


def print_warnings(console: Console, warnings: Sequence[str]) -> None:
    for warning in warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}")
