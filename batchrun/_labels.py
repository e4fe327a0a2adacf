"""Answers in the form they are compared in (evaluation, agreement between samples,
confidence of a label): the bottom layer, so every stage compares the same way."""

from __future__ import annotations

import re

NO_PREDICTION = "(none)"
_SPACES = re.compile(r"\s+")
_TRAILING_PUNCT = ".!?,;:。！？、"


def normalize_answer(text: str) -> str:
    """The comparable form of an answer.

    >>> normalize_answer("  The  Eiffel\\nTower!! ")
    'the eiffel tower'
    """
    return _SPACES.sub(" ", text.strip().casefold()).rstrip(_TRAILING_PUNCT).rstrip()
