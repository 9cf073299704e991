"""Command-line flags derived from a dataclass's fields, as ``rmserve serve`` derives its flags from
``ServerConfig``: the field is the one place for a setting's name, type, default and help.

Field metadata (all optional): ``help``; ``flag`` (the flag's name; None: not a flag); ``choices``;
``commands`` (only these subcommands take it). A bool field is a switch that turns its default around:
``--name`` for a False default, ``--no-name`` for a True one.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from typing import Any

from rmserve.config import field_type

_REQUIRED = dataclasses.MISSING


def flag_fields(cls: type, command: str) -> list[dataclasses.Field]:
    """The fields of ``cls`` that ``command`` takes as flags."""
    return [f for f in dataclasses.fields(cls)
            if f.metadata.get("flag", "") is not None and command in f.metadata.get("commands", (command,))]


def add_dataclass_flags(group, cls: type, command: str, defaults: Mapping[str, Any] | None = None) -> None:
    """One flag per field of ``cls`` that ``command`` takes; ``defaults`` replaces the fields' defaults."""
    defaults = dict(defaults or {})
    for f in flag_fields(cls, command):
        default = defaults.get(f.name, f.default)
        kind = field_type(f, cls)
        help_text = f.metadata.get("help", "")
        if kind is bool:
            flag = f.metadata.get("flag") or ("--no-" if default else "--") + f.name.replace("_", "-")
            group.add_argument(flag, dest=f.name, action="store_false" if default else "store_true",
                               default=default, help=help_text)
            continue
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        if default is _REQUIRED:
            group.add_argument(flag, dest=f.name, type=kind, required=True, help=help_text)
        else:
            if default is not None:
                help_text = f"{help_text} (default: {default})" if help_text else f"default: {default}"
            group.add_argument(flag, dest=f.name, type=kind, default=default, choices=f.metadata.get("choices"),
                               help=help_text)


def dataclass_from_args(cls: type, args: argparse.Namespace, command: str, **fixed: Any):
    """``cls`` from the parsed flags of ``command``; fields it takes no flag for keep their defaults unless
    ``fixed`` sets them."""
    values = {f.name: getattr(args, f.name) for f in flag_fields(cls, command)}
    return cls(**values, **fixed)
