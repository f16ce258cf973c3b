"""How --help shows options and arguments: typer has no setting for its type
column nor for its usage names, so the methods that render them are replaced
on import (tests/cli/test_help.py catches a typer upgrade that breaks them)."""

from __future__ import annotations

from typing import Any

import typer


def _value_type(param: Any, ctx: Any) -> str | None:
    """The type column of --help: nothing for a flag (it takes no value) or an
    argument (its name says what it is); an option's metavar (FILE, DIR, N)."""
    if isinstance(param, typer.core.TyperArgument) or getattr(param, "is_bool_flag", False):
        return None
    return param.metavar or _TYPED_HELP(param, ctx)


# typer prints <bool> beside every flag and <path>, <str> beside values; it has no
# setting for it, so the method that renders that column is replaced here.
_TYPED_HELP = typer.core.TyperOption.display_type_rich
typer.core.TyperOption.display_type_rich = _value_type  # type: ignore[method-assign]
typer.core.TyperArgument.display_type_rich = _value_type  # type: ignore[method-assign]


def _usage_name(param: Any) -> str:
    """An argument in the usage line: SUITE when required, [RUN_B] when not (typer writes {SUITE})."""
    name = param.display_name_raw if param.required else f"[{param.display_name_raw}]"
    return name + ("..." if param.nargs != 1 else "")


typer.core.TyperArgument._usage_display_name = _usage_name  # type: ignore[method-assign]
