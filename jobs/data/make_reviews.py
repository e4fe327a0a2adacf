"""Write jobs/data/reviews.jsonl (300 short product reviews with a sentiment label) and
jobs/data/labelled_reviews.jsonl (1,000 more, the labelled set that confidence,
calibration and cascade jobs rehearse on: jobs/confidence.toml).

Deterministic (fixed seeds), so re-running it gives the committed files byte for byte.
Reviews are stitched from hand-written sentences whose sentiment agrees, plus a set of
hand-written awkward ones (mixed feelings, sarcasm, emoji, other languages, braces and
quotes) that exercise the template and the labelling. The ``label`` column is the gold
label a person would give.

    $ python jobs/data/make_reviews.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).with_name("reviews.jsonl")
COUNT = 300
LABELLED = Path(__file__).with_name("labelled_reviews.jsonl")
LABELLED_COUNT = 1000
LABELLED_SEED = 20250127

PRODUCTS = {
    "wireless earbuds": ("sound", "battery life", "fit", "case"),
    "espresso machine": ("crema", "steam wand", "water tank", "warm-up time"),
    "running shoes": ("cushioning", "grip", "sizing", "laces"),
    "robot vacuum": ("suction", "app", "mapping", "noise"),
    "mechanical keyboard": ("switches", "keycaps", "backlight", "software"),
    "cast iron skillet": ("seasoning", "handle", "weight", "heat retention"),
    "4K monitor": ("colours", "stand", "brightness", "ports"),
    "yoga mat": ("grip", "thickness", "smell", "carry strap"),
    "electric toothbrush": ("battery", "brush heads", "timer", "charger"),
    "backpack": ("zippers", "straps", "laptop sleeve", "water resistance"),
    "air fryer": ("basket", "timer", "capacity", "cleanup"),
    "e-reader": ("screen", "battery", "page turns", "front light"),
    "desk lamp": ("brightness", "colour temperature", "base", "switch"),
    "phone case": ("grip", "buttons", "camera cutout", "drop protection"),
    "blender": ("motor", "jug", "lid", "noise"),
    "smart watch": ("heart-rate sensor", "battery", "strap", "notifications"),
    "tent": ("poles", "rain fly", "zips", "pack size"),
    "office chair": ("lumbar support", "armrests", "wheels", "assembly"),
    "bluetooth speaker": ("bass", "pairing", "battery", "waterproofing"),
    "kitchen knife": ("edge", "balance", "handle", "sheath"),
}

PLURAL = {
    "switches", "keycaps", "ports", "colours", "zippers", "straps", "laces", "brush heads",
    "poles", "zips", "armrests", "wheels", "notifications",
}  # fmt: skip

OPENERS = {
    "positive": [
        "Really happy with this {product}.",
        "Best {product} I have owned, and I have owned a few.",
        "Five stars. The {product} does exactly what it promises.",
        "Bought this {product} for my partner and now I want one too.",
        "Excellent {product} for the price.",
        "I was sceptical, but this {product} won me over in a week.",
        "Great little {product}, arrived two days early.",
        "Love it. Second {product} from this brand and still impressed.",
        "Solid {product}; it feels far more expensive than it was.",
        "Wonderful {product}, would buy again without thinking.",
    ],
    "negative": [
        "Disappointed with this {product}.",
        "The {product} broke after three weeks.",
        "Returned the {product} the next day.",
        "Worst {product} I have bought in years.",
        "Do not buy this {product}.",
        "I wanted to like this {product}, I really did.",
        "Poor quality {product}, and customer service never replied.",
        "The {product} arrived scratched and missing a part.",
        "Asked for a refund on the {product} after a month.",
        "Terrible {product}; the photos are nothing like the real thing.",
    ],
    "neutral": [
        "The {product} arrived on Tuesday.",
        "It is a {product}. It works.",
        "Average {product}, nothing special either way.",
        "The {product} is fine for what it is.",
        "Using the {product} for two weeks now.",
        "Does the job. Not much more to say about this {product}.",
        "Bought the {product} to replace an older one.",
        "The {product} came in a plain box with a short manual.",
        "Comparable to the other {product}s in this price range.",
        "It is okay. Some days I forget I own this {product}.",
    ],
}

ASPECTS = {
    "positive": [
        "The {aspect} {is} outstanding.",
        "The {aspect} exceeded my expectations.",
        "Special mention for the {aspect}, which {is} superb.",
        "Even the {aspect} {is} well thought out.",
        "No complaints about the {aspect} at all.",
    ],
    "negative": [
        "The {aspect} stopped working almost immediately.",
        "The {aspect} {is} flimsy and {feels} cheap.",
        "Whoever designed the {aspect} never used one.",
        "The {aspect} {is} a constant annoyance.",
        "The {aspect} {is} much worse than advertised.",
    ],
    "neutral": [
        "The {aspect} {is} about what you would expect.",
        "The {aspect} {is} neither good nor bad.",
        "I have not tested the {aspect} much yet.",
        "The {aspect} {is} similar to what I had before.",
        "The {aspect} {takes} a few days to get used to.",
    ],
}

CLOSERS = {
    "positive": [
        "Highly recommend.",
        "Worth every penny.",
        "Would happily buy it again.",
        "10/10.",
        "Thanks to the seller for the quick delivery!",
    ],
    "negative": [
        "Avoid.",
        "Save your money.",
        "One star is generous.",
        "Never again.",
        "Sending it back.",
    ],
    "neutral": [
        "We will see how it holds up.",
        "Might update this review later.",
        "Three stars.",
        "Your mileage may vary.",
        "",
    ],
}

# Hand-written ones that a stitched sentence would not produce.
SPECIAL = [
    (
        "phone case",
        "Oh great, another case that cracked the first time I dropped it. Fantastic.",
        "negative",
    ),
    (
        "espresso machine",
        "Great coffee, but the machine leaks and support is useless. Returning it.",
        "negative",
    ),
    (
        "robot vacuum",
        "Cleans well but gets stuck under the sofa every day. Mixed feelings.",
        "neutral",
    ),
    ("wireless earbuds", "🔥🔥🔥 best purchase this year 🎧", "positive"),
    ("yoga mat", "meh", "neutral"),
    (
        "running shoes",
        "Excelentes zapatillas, muy cómodas para correr largas distancias.",
        "positive",
    ),
    ("air fryer", "Das Gerät ist nach zwei Wochen kaputt gegangen. Sehr enttäuschend.", "negative"),
    (
        "mechanical keyboard",
        'The box says "whisper quiet". It is not. It is loud. Very loud.',
        "negative",
    ),
    (
        "4K monitor",
        "Config note for others: set {brightness} to 70 in the OSD and it looks perfect.",
        "positive",
    ),
    ("blender", "It blends. Sometimes it also blends the lid seal into the smoothie.", "negative"),
    (
        "tent",
        "Survived a night of heavy rain on Dartmoor with everyone dry inside. Superb.",
        "positive",
    ),
    ("desk lamp", "Works as described.", "neutral"),
    ("kitchen knife", "Sharp out of the box, stays sharp, feels balanced. Love it!", "positive"),
    (
        "office chair",
        "Assembly took an hour; the chair itself is average. Back is okay-ish.",
        "neutral",
    ),
    ("smart watch", "Not bad, not great. Battery lasts about two days as promised.", "neutral"),
    (
        "backpack",
        "Strap snapped on day one of the trip. Had to carry it like a suitcase.",
        "negative",
    ),
    (
        "e-reader",
        "Read 14 books on it this summer. The screen is easy on the eyes. 5/5",
        "positive",
    ),
    (
        "bluetooth speaker",
        "I expected more bass for the price, but it is loud and pairs fast.",
        "neutral",
    ),
    ("cast iron skillet", "Heavy!!! But makes the best cornbread I've ever baked.", "positive"),
    (
        "electric toothbrush",
        "Charger died, toothbrush died, warranty claim denied. Wonderful. Not.",
        "negative",
    ),
]


def make_reviews(count: int = COUNT, seed: int = 20240611) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows: list[dict[str, str]] = []
    specials = list(SPECIAL)
    # Spread the hand-written ones evenly through the file.
    special_every = count // len(specials)
    products = sorted(PRODUCTS)
    labels = ["positive"] * 5 + ["negative"] * 4 + ["neutral"] * 3
    seen: set[str] = set()
    while len(rows) < count:
        i = len(rows)
        if specials and i % special_every == special_every // 2:
            product, text, label = specials.pop(0)
        else:
            label = rng.choice(labels)
            product = rng.choice(products)
            parts = [rng.choice(OPENERS[label]).format(product=product)]
            if rng.random() < 0.8:
                aspect = rng.choice(PRODUCTS[product])
                plural = aspect in PLURAL
                part = rng.choice(ASPECTS[label]).format(
                    aspect=aspect,
                    **{"is": "are" if plural else "is"},
                    feels="feel" if plural else "feels",
                    takes="take" if plural else "takes",
                )
                parts.append(part[0].upper() + part[1:])
            if rng.random() < 0.6:
                parts.append(rng.choice(CLOSERS[label]))
            text = " ".join(p for p in parts if p)
            if text in seen:
                continue
        seen.add(text)
        rows.append({"id": f"rev-{i + 1:04d}", "text": text, "product": product, "label": label})
    return rows


def write(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {path}")


def main() -> None:
    write(OUT, make_reviews())
    write(LABELLED, make_reviews(LABELLED_COUNT, LABELLED_SEED))


if __name__ == "__main__":
    main()
