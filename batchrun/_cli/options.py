"""The command-line options of the settings, made from their declarations.

Each `batchrun._settings.Settings` field with flags becomes one click option (a setting
that is one job-file key gets ``--<its name>`` unless it says otherwise, see
`batchrun._settings.Spec.flags`), and each part of a table setting one more
(``[eval] field`` -> ``--eval-field``, ``[request] temperature`` -> ``--temperature``).
`given_settings` turns what was typed into checked setting values, with click's
usage-error message (exit 2) naming the option when a value fails its check; a table's
parts come back as a `batchrun._settings.Partial`, laid over the job file's table.

    @click.command()
    @setting_options
    def run(**options): settings_values = given_settings(options)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import click

from batchrun._checks import METAVARS, Invalid, Refused, Where
from batchrun._settings import Part, Partial, Settings, Spec
from batchrun.errors import ConfigError, MissingInput

F = TypeVar("F", bound=Callable[..., Any])
PART = "__"
"""Between a setting's name and a part's key in a click parameter name."""


def _metavar(spec: Spec | Part) -> str | None:
    """The option's own metavar, else its check's (``N``, ``FLOAT``, ``FILE``)."""
    if spec.metavar is not None or spec.choices:
        return spec.metavar
    return METAVARS.get(spec.check) if spec.check is not None else None


def _option(
    flags: tuple[str, ...], param: str, kind: str, spec: Spec | Part, **extra: Any
) -> Callable[[F], F]:
    common: dict[str, Any] = {"help": spec.help, **extra}
    if kind == "flag":
        return click.option(*flags, param, is_flag=True, default=None, **common)
    if kind == "toggle":
        return click.option(flags[0], param, default=None, **common)
    if kind in ("multiple", "pairs"):
        return click.option(*flags, param, multiple=True, metavar=_metavar(spec), **common)
    choice = click.Choice(list(spec.choices)) if spec.choices else None
    return click.option(*flags, param, type=choice, metavar=_metavar(spec), **common)


def setting_option(name: str, spec: Spec) -> Callable[[F], F]:
    """The click option of one setting (its parts: `part_options`)."""
    flags = spec.flags or ()
    if spec.kind == "optional":
        return click.option(
            *flags,
            name,
            is_flag=False,
            flag_value=spec.flag_value,
            metavar=spec.metavar,
            help=spec.help,
        )
    return _option(flags, name, spec.kind, spec, envvar=spec.envvar)


def part_options(name: str, spec: Spec) -> list[Callable[[F], F]]:
    """One click option per part of a table setting (``--eval-field``)."""
    return [
        _option(spec.part_flags(part), f"{name}{PART}{_param(part.key)}", part.kind, part)
        for part in spec.parts
    ]


def _param(key: str) -> str:
    """A part's key as a click parameter name: "*" -> any, "*.base_url" -> any_base_url."""
    return key.replace("*", "any").replace(".", "_")


def setting_options(command: F, specs: Iterable[tuple[str, Spec]] | None = None) -> F:
    """Add the options of every setting (and of its parts), in declaration order;
    ``specs``: only these settings, in their order."""
    decorators: list[Callable[[F], F]] = []
    for name, spec in Settings.specs() if specs is None else specs:
        if spec.flags:
            decorators.append(setting_option(name, spec))
        decorators.extend(part_options(name, spec))
    for decorate in reversed(decorators):
        command = decorate(command)
    return command


def hint(flags: tuple[str, ...], kind: str) -> str:
    """How click names an option in its messages: '-c' / '--concurrency'."""
    shown = flags[0].split("/") if kind == "toggle" else flags
    return " / ".join(f"'{f}'" for f in shown)


def given_settings(options: Mapping[str, Any]) -> dict[str, Any]:
    """The settings given on the command line, checked (an unset option is left out);
    a table setting's parts as one `Partial` per setting."""
    specs = dict(Settings.specs())
    out: dict[str, Any] = {}
    for param, value in options.items():
        if value is None or value == ():
            continue
        name, _, key = param.partition(PART)
        if name not in specs:
            continue
        spec = specs[name]
        if key:
            part = next(p for p in spec.parts if _param(p.key) == key)
            flags = spec.part_flags(part)
            clean = _checked(part, value, flags, part.kind)
            partial = out.setdefault(name, Partial())
            if part.key == "*":
                partial.update(clean)
            elif part.key.startswith("*."):  # one field of named tables: --endpoint a=URL
                for table, item in clean.items():
                    partial.setdefault(table, {})[part.key[2:]] = item
            else:
                partial[part.key] = clean
            continue
        flags = spec.flags or ()
        if spec.kind == "json":
            value = _json_value(value, flags)
        out[name] = _checked(spec, value, flags, spec.kind)
    return out


def command_settings(
    input_path: str | None, job_path: str | None, options: Mapping[str, Any]
) -> Settings:
    """The settings of a command line: the job file's, with what was typed over them.
    No input named at all is a usage error (exit 2), as a missing argument is to click."""
    from batchrun._api import settings_for

    try:
        return settings_for(input_path, job=job_path, given=given_settings(options))
    except MissingInput as exc:
        raise click.UsageError(str(exc), ctx=click.get_current_context(silent=True)) from None


def _checked(spec: Spec | Part, value: Any, flags: tuple[str, ...], kind: str) -> Any:
    if spec.check is None:
        return value
    label = flags[-1].split("/")[0] if flags else ""
    try:
        return spec.check(value, Where(label))
    except Refused as exc:  # not a usage error: one line, exit 1
        raise ConfigError(str(exc)) from None
    except Invalid as exc:
        message = "; ".join(m for _, m in exc.problems)
        raise click.BadParameter(message, param_hint=hint(flags, kind)) from None


def _json_value(text: str, flags: tuple[str, ...]) -> Any:
    """A "json" option's value: JSON text, or the name of a file that holds it."""
    import json

    source = text
    if os.path.isfile(text):
        try:
            with open(text, encoding="utf-8") as f:
                source = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise click.BadParameter(
                f"cannot read {text}: {exc}", param_hint=hint(flags, "")
            ) from None
    try:
        return json.loads(source)
    except ValueError as exc:
        where = text if source is not text else "the value"
        raise click.BadParameter(
            f"{where} is not valid JSON ({exc}); give JSON text or a .json file",
            param_hint=hint(flags, ""),
        ) from None


__all__ = [
    "command_settings",
    "given_settings",
    "hint",
    "part_options",
    "setting_option",
    "setting_options",
]
