"""The command-line options of the settings, made from their declarations.

Each `batchrun.settings.Settings` field with ``flags`` becomes one click option;
`given_settings` turns what was typed into checked setting values, with click's
usage-error message (exit 2) naming the option when a value fails its check.

    @click.command()
    @setting_options
    def run(**options): settings_values = given_settings(options)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import click

from batchrun.checks import Invalid, Refused, Where
from batchrun.errors import ConfigError
from batchrun.settings import Settings, Spec

F = TypeVar("F", bound=Callable[..., Any])


def setting_option(name: str, spec: Spec) -> Callable[[F], F]:
    """The click option of one setting."""
    common: dict[str, Any] = {"help": spec.help}
    if spec.kind == "flag":
        return click.option(*spec.flags, name, is_flag=True, default=None, **common)
    if spec.kind == "toggle":
        return click.option(spec.flags[0], name, default=None, **common)
    if spec.kind == "optional":
        return click.option(
            *spec.flags,
            name,
            is_flag=False,
            flag_value=spec.flag_value,
            metavar=spec.metavar,
            **common,
        )
    if spec.kind == "multiple":
        return click.option(*spec.flags, name, multiple=True, metavar=spec.metavar, **common)
    kind = click.Choice(list(spec.choices)) if spec.choices else None
    return click.option(
        *spec.flags, name, type=kind, envvar=spec.envvar, metavar=spec.metavar, **common
    )


def setting_options(command: F) -> F:
    """Add one option per setting that has flags, in declaration order."""
    for name, spec in reversed(list(Settings.specs())):
        if spec.flags:
            command = setting_option(name, spec)(command)
    return command


def hint(spec: Spec) -> str:
    """How click names an option in its messages: '-c' / '--concurrency'."""
    flags = spec.flags[0].split("/") if spec.kind == "toggle" else spec.flags
    return " / ".join(f"'{f}'" for f in flags)


def given_settings(options: Mapping[str, Any]) -> dict[str, Any]:
    """The settings given on the command line, checked (an unset option is left out)."""
    specs = dict(Settings.specs())
    out: dict[str, Any] = {}
    for name, value in options.items():
        if name not in specs or value is None or value == ():
            continue
        spec = specs[name]
        try:
            out[name] = spec.check(value, Where(spec.flags[-1])) if spec.check else value
        except Refused as exc:  # not a usage error: one line, exit 1
            raise ConfigError(str(exc)) from None
        except Invalid as exc:
            message = "; ".join(m for _, m in exc.problems)
            raise click.BadParameter(message, param_hint=hint(spec)) from None
    return out


__all__ = ["given_settings", "hint", "setting_option", "setting_options"]
