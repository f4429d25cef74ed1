"""Options and argument types shared by every command module of the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

SpecFile = Annotated[
    Path, typer.Argument(metavar="FILE", help="Cluster spec (YAML).", show_default=False)
]
StateDir = Annotated[
    Path | None,
    typer.Option("--state-dir", help="State root (default $PROVISIONER_STATE_DIR or "
                 "~/.provisioner).", show_default=False),
]


def split_list(values: list[str] | None) -> list[str] | None:
    """Accept both repeated options and comma lists (``--only os,runtime``)."""
    if values is None:
        return None
    return [v for item in values for v in item.split(",") if v]
