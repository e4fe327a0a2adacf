"""Token logprobs for a simulated answer, in OpenAI's ``choices[].logprobs.content`` shape.

Pure. The answer is cut into the model's real tokens (`batchrun._pacing.tokens`); each
token gets ``token``, ``logprob``, ``bytes`` and up to ``top`` ``top_logprobs``
(itself among them when it is that likely). A labelling answer's label tokens carry
its probability: the first label token has logprob log(p * `LABEL_MASS`) and lists
the other labels (after the same bytes the token has before the label, such as an
opening quote) with their probabilities, plus one token that is no label with the
mass left (`LABEL_MASS`: a model never puts all of it on well-formed labels); the
label's later tokens are certain. Other tokens are near-certain.

    >>> entries = token_logprobs("yes", "gpt-4o-mini", random.Random(0), 2,
    ...                          LabelSpan(0, 3, 0.8, {"no": 0.2}))
    >>> [e["token"] for e in entries], round(math.exp(entries[0]["logprob"]), 3)
    (['yes'], 0.792)
    >>> [t["token"] for t in entries[0]["top_logprobs"]]
    ['yes', 'no']
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from batchrun._pacing import tokens
from batchrun.sim.schema import WORDS

LABEL_MASS = 0.99
"""The share of the first label token's probability on well-formed labels."""

__all__ = ["LABEL_MASS", "LabelSpan", "token_logprobs"]


@dataclass(frozen=True, slots=True)
class LabelSpan:
    """Where the label is in the answer (character offsets) and its probabilities."""

    start: int
    end: int
    probability: float
    others: dict[str, float]
    """The other labels and their probabilities."""


def _entry(piece: bytes, logprob: float) -> dict[str, Any]:
    return {"token": piece.decode("utf-8", "replace"), "logprob": logprob, "bytes": list(piece)}


def _log(p: float) -> float:
    return math.log(p) if p > 0 else -9999.0


def token_logprobs(
    content: str, model: str, rng: random.Random, top: int, label: LabelSpan | None = None
) -> list[dict[str, Any]]:
    """The logprobs of every token of ``content`` (see the module docstring)."""
    enc = tokens.get_encoding(tokens.encoding_name_for(model))
    data = content.encode("utf-8")
    b_start = b_end = -1
    if label is not None:
        b_start = len(content[: label.start].encode("utf-8"))
        b_end = len(content[: label.end].encode("utf-8"))
    out: list[dict[str, Any]] = []
    pos = 0
    first_label = True
    for token_id in enc.encode_ordinary(content):
        piece = enc.decode_single_token_bytes(token_id)
        lo, hi = pos, pos + len(piece)
        pos = hi
        in_label = label is not None and hi > b_start and lo < b_end
        if in_label and first_label:
            assert label is not None
            first_label = False
            prefix = data[lo:b_start] if lo < b_start else b""
            chosen = label.probability * LABEL_MASS
            choices = [(piece, chosen)]
            choices += [(prefix + o.encode(), q * LABEL_MASS) for o, q in label.others.items()]
            junk = prefix + _not_a_label(content[label.start : label.end]).encode()
            choices.append((junk, 1.0 - LABEL_MASS))
            logprob = _log(chosen)
        elif in_label:
            logprob = 0.0
            choices = [(piece, 1.0)]
        else:
            p = math.exp(-0.02 * rng.random())
            logprob = math.log(p)
            choices = [(piece, p)]
            share = 1.0 - p
            for word in rng.sample(WORDS, min(top, 3)):
                share /= 2
                choices.append(((" " + word).encode(), share))
        entry = _entry(piece, logprob)
        ranked = sorted(choices, key=lambda c: -c[1])[:top]
        entry["top_logprobs"] = [_entry(b, _log(q)) for b, q in ranked]
        out.append(entry)
    return out


def _not_a_label(label: str) -> str:
    """A token a model might give instead of a well-formed label (another casing)."""
    other = label.upper() if label != label.upper() else label.lower()
    return other if other != label else label + "!"
