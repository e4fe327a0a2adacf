"""Price files: a TOML table of model prices the user gives (``--prices FILE``).

    [models."my-model"]
    input = 0.15          # USD per million prompt tokens
    cached_input = 0.075
    output = 0.60
    batch_multiplier = 0.5

Every problem in a file is reported at once, with its key path. A commented example
ships inside the package (`example_price_file`; ``batchrun prices --example`` prints it).
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import replace
from importlib import resources
from typing import Any

from batchrun._cost.price import INLINE, ModelPrice
from batchrun.errors import ConfigError

_PRICE_KEYS = ("input", "cached_input", "output")
_BATCH_KEYS = ("batch_input", "batch_cached_input", "batch_output")
_ALLOWED_KEYS = frozenset(_PRICE_KEYS + _BATCH_KEYS + ("batch_multiplier",))
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
EXAMPLE_FILE = "prices.example.toml"
ADD_A_PRICE = (
    "add a price with --prices FILE, [prices.models.NAME] in a job file or prices= in "
    "Python (`batchrun prices --example` prints a price file to start from)"
)
"""What to do about a model without a price, for every message that meets one."""


def example_price_file() -> str:
    """The commented example price file shipped in the package (``batchrun prices
    --example``): every key, with what it means.

    >>> "[models." in example_price_file()
    True
    """
    return resources.files("batchrun._cost").joinpath(EXAMPLE_FILE).read_text(encoding="utf-8")


def _key(name: str) -> str:
    return name if _BARE_KEY.match(name) else '"' + name.replace('"', '\\"') + '"'


def read_price_file(path: str) -> dict[str, ModelPrice]:
    """Parse a TOML price file into model prices (the format: `example_price_file`)."""
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read price file: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return parse_price_table(data, path)


def parse_price_table(
    data: Mapping[str, Any], origin: str, *, key_prefix: str = ""
) -> dict[str, ModelPrice]:
    """Validate a parsed price table ``{"models": {name: {input, output, ...}}}``.

    Collects every problem (unknown key, negative or non-number price, missing input
    or output, conflicting batch keys) and raises them together, each with its key path.

        >>> parse_price_table({"models": {"m": {"input": 0, "output": 0}}}, "x.toml")["m"].output
        0.0
    """
    problems: list[str] = []
    if not isinstance(data, Mapping):
        raise ConfigError(f"{origin}: {key_prefix or 'price table'} must be a table")
    for key in data:
        if key != "models":
            problems.append(f"{key_prefix}{_key(key)}: unknown key (expected [models.NAME] tables)")
    models = data.get("models", {})
    if not isinstance(models, Mapping):
        problems.append(f"{key_prefix}models: must be a table of models")
        models = {}
    prices = model_prices(models, f"{key_prefix}models", problems)
    if problems:
        listed = "\n".join(f"  {origin}: {problem}" for problem in problems)
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        raise ConfigError(f"{origin}: {count} in prices:\n{listed}")
    return prices


def model_prices(
    models: Mapping[str, Any], where: str, problems: list[str]
) -> dict[str, ModelPrice]:
    """Model name -> price entry (the keys of a price file's ``[models."NAME"]``) into
    prices; each problem is appended to ``problems`` with its key path under ``where``.

        >>> problems = []
        >>> model_prices({"m": {"input": 1, "outptu": 2}}, "prices", problems) == {}
        True
        >>> problems[0].split(":")[0]
        'prices.m.outptu'
    """
    prices: dict[str, ModelPrice] = {}
    for name, entry in models.items():
        at = f"{where}.{_key(str(name))}" if where else _key(str(name))
        if not isinstance(name, str) or not name.strip():
            problems.append(f"{at}: a model name must be a non-empty string")
        elif not isinstance(entry, Mapping):
            problems.append(f"{at}: must be a table with input and output prices")
        elif (price := _parse_model(entry, at, problems)) is not None:
            prices[name] = price
    return prices


def user_prices(source: Any) -> dict[str, ModelPrice]:
    """The prices a run's ``prices`` setting gives: a price file's path, or
    `batchrun._settings.Prices` (a file and/or inline entries, inline winning), or the
    same as run.json records it (``{"file": ..., "models": {...}}``).

        >>> user_prices({"models": {"m": {"input": 1, "output": 2}}})["m"].output
        2.0
    """
    if source is None:
        return {}
    if isinstance(source, str | os.PathLike):
        return read_price_file(os.fspath(source))
    if isinstance(source, Mapping):
        file, models = source.get("file"), source.get("models") or {}
    else:
        file, models = source.file, source.models
    prices = read_price_file(file) if file else {}
    inline = parse_price_table({"models": models}, "prices", key_prefix="prices.")
    prices.update({name: replace(price, source=INLINE) for name, price in inline.items()})
    return prices


def _parse_model(entry: Mapping[str, Any], where: str, problems: list[str]) -> ModelPrice | None:
    before = len(problems)
    for key in entry:
        if key not in _ALLOWED_KEYS:
            allowed = ", ".join(sorted(_ALLOWED_KEYS))
            problems.append(f"{where}.{_key(key)}: unknown key (allowed: {allowed})")
    values: dict[str, float] = {}
    for key in sorted(_ALLOWED_KEYS & entry.keys()):
        value = entry[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            problems.append(f"{where}.{key}: must be a number, got {value!r}")
        elif not math.isfinite(value) or value < 0:
            problems.append(f"{where}.{key}: must be a finite number >= 0, got {value!r}")
        else:
            values[key] = float(value)
    for key in ("input", "output"):
        if key not in entry:
            problems.append(f"{where}: missing {key} (USD per million tokens)")
    batch_given = [key for key in _BATCH_KEYS if key in entry]
    if "batch_multiplier" in entry and batch_given:
        problems.append(f"{where}: give batch_multiplier or batch_* prices, not both")
    elif batch_given and not {"batch_input", "batch_output"} <= entry.keys():
        problems.append(f"{where}: batch prices need both batch_input and batch_output")
    if len(problems) > before:
        return None

    cached = values.get("cached_input")
    batch: ModelPrice | None = None
    if "batch_multiplier" in values:
        factor = values["batch_multiplier"]
        batch = ModelPrice(
            input=values["input"] * factor,
            output=values["output"] * factor,
            cached_input=None if cached is None else cached * factor,
        )
    elif "batch_input" in values:
        # same rule as genai-prices: no batch cached rate -> the standard cached rate
        batch = ModelPrice(
            input=values["batch_input"],
            output=values["batch_output"],
            cached_input=values.get("batch_cached_input", cached),
        )
    return ModelPrice(
        input=values["input"], output=values["output"], cached_input=cached, batch=batch
    )


# ---------------------------------------------------------------------- cost report


__all__ = [
    "ADD_A_PRICE",
    "example_price_file",
    "model_prices",
    "parse_price_table",
    "read_price_file",
    "user_prices",
]
