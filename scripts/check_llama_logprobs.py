"""Check batchrun's logprob confidence on a real engine (llama.cpp's llama-server, vLLM,
or any OpenAI-compatible server that returns logprobs).

Sends one labelling request twice, with ``logprobs: true``, at temperature 0: once with
``top_logprobs: 0`` (left out of the request, as batchrun sends it: llama.cpp's server
answers an explicit 0 with no logprobs at all, and a missing one with 20 alternatives),
where batchrun's confidence must equal exp of the label tokens' logprobs (their sum:
one token for most labels), and once with ``top_logprobs: K``, where it must equal
that probability normalised over the other labels the first label token's
alternatives show, computed here by hand (an answer that is no label stays raw).
Prints both side by side and exits 1 when they differ.

    $ llama-server -m model.gguf --port 8080 &
    $ .venv/bin/python scripts/check_llama_logprobs.py http://127.0.0.1:8080/v1
    $ .venv/bin/python scripts/check_llama_logprobs.py http://127.0.0.1:8080/v1 --plain

The key, if the server wants one, is read from $OPENAI_API_KEY.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Any

import httpx

from batchrun._confidence import ConfidenceReader, label_span

LABELS = ("positive", "negative", "neutral")
TEXT = "The battery died after two days and support never answered. Avoid."


def ask(url: str, model: str, text: str, top: int, plain: bool, timeout: float) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "temperature": 0,
        "max_tokens": 40,
        "logprobs": True,
        "messages": [
            {
                "role": "system",
                "content": "Label the sentiment of the review: positive, negative or neutral."
                + (" Answer with the label alone, in lower case." if plain else ""),
            },
            {"role": "user", "content": text},
        ],
    }
    if top:
        body["top_logprobs"] = top
    if not plain:
        schema = {
            "type": "object",
            "properties": {"sentiment": {"type": "string", "enum": list(LABELS)}},
            "required": ["sentiment"],
            "additionalProperties": False,
        }
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "sentiment", "schema": schema, "strict": True},
        }
    headers = {}
    key = os.environ.get("OPENAI_API_KEY")
    if key:
        headers["Authorization"] = f"Bearer {key}"
    response = httpx.post(
        url.rstrip("/") + "/chat/completions", json=body, headers=headers, timeout=timeout
    )
    response.raise_for_status()
    answer: dict[str, Any] = response.json()
    return answer


def by_hand(answer: dict[str, Any], field: str | None) -> tuple[float, float, list[str]] | None:
    """(exp of the label tokens' logprobs, normalised over the other labels shown, the
    label tokens), found without batchrun's code: walk the tokens' bytes."""
    choice = answer["choices"][0]
    content = choice["message"]["content"]
    tokens = (choice.get("logprobs") or {}).get("content")
    found = label_span(content, field)
    if not tokens or found is None:
        return None
    start, end, label = found
    lo = len(content[:start].encode())
    hi = len(content[:end].encode())
    pos, picked = 0, []
    joined = b"".join(bytes(t["bytes"]) if t.get("bytes") else t["token"].encode() for t in tokens)
    pos = -max(0, joined.find(content.encode()))
    for t in tokens:
        piece = bytes(t["bytes"]) if t.get("bytes") else t["token"].encode()
        if pos + len(piece) > lo and pos < hi:
            picked.append((t, pos))
        pos += len(piece)
    raw = math.exp(sum(t["logprob"] for t, _ in picked))
    first, first_at = picked[0]
    prefix = content.encode()[max(first_at, 0) : lo]
    others = 0.0
    for alt in first.get("top_logprobs") or ():
        text = bytes(alt["bytes"]) if alt.get("bytes") else alt["token"].encode()
        if not text.startswith(prefix):
            continue
        rest = text[len(prefix) :].decode("utf-8", "ignore")
        matches = {x for x in LABELS if rest and (x.startswith(rest) or rest.startswith(x))}
        if len(matches) == 1 and label not in matches:
            others += math.exp(alt["logprob"])
    normalised = raw / (raw + others) if first.get("top_logprobs") and label in LABELS else raw
    return raw, normalised, [t["token"] for t, _ in picked]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "base_url", help="the server's OpenAI base URL, e.g. http://127.0.0.1:8080/v1"
    )
    parser.add_argument("--model", default="local", help="model name to send [default: local]")
    parser.add_argument("--text", default=TEXT, help="the review to label")
    parser.add_argument("--top", type=int, default=5, help="top_logprobs of the second request")
    parser.add_argument("--plain", action="store_true", help="a plain answer, no JSON schema")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    field = None if args.plain else "sentiment"
    ok = True
    for top in (0, args.top):
        reader = ConfidenceReader("logprobs", label_field=field, labels=LABELS, top_logprobs=top)
        answer = ask(args.base_url, args.model, args.text, top, args.plain, args.timeout)
        content = answer["choices"][0]["message"]["content"]
        scored = reader.read(answer)
        hand = by_hand(answer, field)
        print(f"top_logprobs={top}: answer {content!r}")
        if hand is None or scored.confidence is None:
            print(f"  no confidence: {scored.missing} (did the server return logprobs?)")
            ok = False
            continue
        raw, normalised, pieces = hand
        expected = raw if top == 0 else normalised
        same = math.isclose(scored.confidence, expected, rel_tol=1e-9, abs_tol=1e-12)
        ok = ok and same
        print(f"  label {scored.label!r} in tokens {pieces}")
        print(f"  exp(label token logprob{'s' if len(pieces) > 1 else ''}) = {raw:.6f}")
        if top:
            print(f"  normalised over the labels shown       = {normalised:.6f}")
        print(f"  batchrun confidence                     = {scored.confidence:.6f}  "
              f"{'equal' if same else 'DIFFERENT'}")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
