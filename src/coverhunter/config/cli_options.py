"""Command-line options made from the settings dataclasses, so that each option's name, type,
default and help are written once: on the dataclass field.

A field ``name`` becomes the option ``--name`` (underscores as hyphens; ``metadata["flag"]``
names it otherwise) of the field's type (``int``, ``float``, ``str`` or ``Path``, each
optionally ``| None``; ``metadata["type"]`` for a stricter parser such as
:func:`positive_int`), with the field's default (a field without one: a required option),
``metadata["help"]`` and ``metadata["metavar"]``. A ``bool`` field is a switch
(``store_true``): on sets the field to True, or to False with ``metadata["invert"]``
(``--protect-reads`` -> ``open_reads=False``). ``metadata["choices"]`` maps the words an
option takes to the field's values (``--search exact`` -> ``approximate=False``).

:func:`add_arguments` adds the options of some fields to a parser; :func:`from_arguments`
reads the parsed values back as the fields' values, ready for the dataclass.
"""

from __future__ import annotations

import argparse
import types
import typing
from dataclasses import MISSING, Field, fields
from typing import Any


def positive_int(text: str) -> int:
    """'3' -> 3; zero, negative or not a number: a usage error."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {v}")
    return v


def option_flag(f: Field) -> str:
    """The option of field ``f``: ``metadata["flag"]``, else ``--`` and its name hyphenated."""
    return f.metadata.get("flag", "--" + f.name.replace("_", "-"))


def option_dest(f: Field) -> str:
    """Where argparse stores the option of field ``f`` (its flag, as argparse spells a dest)."""
    return option_flag(f).lstrip("-").replace("-", "_")


def field_default(f: Field) -> Any:
    """The default of field ``f`` (``MISSING`` when it has none)."""
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def _fields(cls: type) -> dict[str, Field]:
    return {f.name: f for f in fields(cls)}


def _value_type(hint: Any) -> Any:
    """``int | None`` -> ``int``; ``int`` -> ``int``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    if typing.get_origin(hint) is not None:
        raise TypeError(f"no command-line option for a field of type {hint}")
    return hint


def _word(words: dict, value: Any) -> str:
    """The word of ``words`` that means ``value`` (None, False and 0 told apart)."""
    for w, v in words.items():
        if v is value or (type(v) is type(value) and v == value):
            return w
    raise ValueError(f"no word for {value!r} among {sorted(words)}")


def add_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    names: list[str] | tuple[str, ...],
    *,
    defaults: dict[str, Any] | None = None,
    helps: dict[str, str] | None = None,
    notes: dict[str, str] | None = None,
) -> None:
    """Add the options of the fields ``names`` of dataclass ``cls`` to ``parser``, in order.

    Parameters
    ----------
    parser : argparse.ArgumentParser or argument group
    cls : type
        A dataclass whose fields carry their options' ``metadata`` (the module's docstring).
    names : sequence of str
        Its fields to add, in the order the help lists them.
    defaults : dict, optional
        Field name -> another default, for a command that starts elsewhere (``evaluate``'s
        ``--rerank 0``).
    helps : dict, optional
        Field name -> another help text, with ``defaults``.
    notes : dict, optional
        Field name -> text added to its help (what a command does more with it).
    """
    known = _fields(cls)
    hints = typing.get_type_hints(cls)
    for name in names:
        f = known[name]
        meta = f.metadata
        default = (defaults or {}).get(name, field_default(f))
        text = (helps or {}).get(name, meta.get("help"))
        if text is not None and notes and name in notes:
            text += notes[name]
        kw: dict[str, Any] = {"help": text}
        value_type = _value_type(hints[name])
        if "choices" in meta:
            kw.update(choices=list(meta["choices"]), default=_word(meta["choices"], default))
        elif value_type is bool:
            if default is not bool(meta.get("invert", False)):
                raise TypeError(f"{cls.__name__}.{name}: a switch's default must be what it is off")
            kw["action"] = "store_true"
        else:
            if default is MISSING:
                kw["required"] = True
            else:
                kw["default"] = default
            parse = meta.get("type", None if value_type is str else value_type)
            if parse is not None:
                kw["type"] = parse
            if "metavar" in meta:
                kw["metavar"] = meta["metavar"]
        parser.add_argument(option_flag(f), **kw)


def from_arguments(
    cls: type, args: argparse.Namespace, names: list[str] | tuple[str, ...] | None = None
) -> dict:
    """The values of the fields of ``cls`` whose options ``args`` has (or of ``names``), as the
    fields take them: ``cls(**from_arguments(cls, args))``.

    Raises
    ------
    AttributeError
        One of ``names`` has no option in ``args``.
    """
    out = {}
    for f in fields(cls):
        if names is not None and f.name not in names:
            continue
        dest = option_dest(f)
        if not hasattr(args, dest):
            if names is not None:
                raise AttributeError(f"the parsed arguments have no {option_flag(f)} (field {f.name})")
            continue
        value = getattr(args, dest)
        if "choices" in f.metadata:
            value = f.metadata["choices"][value]
        elif f.metadata.get("invert"):
            value = not value
        out[f.name] = value
    return out


__all__ = ["positive_int", "option_flag", "option_dest", "field_default", "add_arguments", "from_arguments"]
