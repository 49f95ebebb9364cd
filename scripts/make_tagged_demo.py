"""Write the bundled tagged demo: review sentences with BRAND / PRODUCT / PRICE tags and a sentiment.

The sentences are built from hand-written templates and word lists with a
fixed seed, so the files are reproducible: python scripts/make_tagged_demo.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from mtst.modeling.tagging import split_words

BRANDS = [
    "Acme",
    "Northwind",
    "Zentro",
    "Kelvin",
    "Orbita",
    "Lumio",
    "Brightline",
    "Haverly",
    "Quorra",
    "Tessel",
    "Vantor",
    "Mirel",
    "Solace",
    "Pinecrest",
    "Aurex",
    "Coda",
    "Fennick",
    "Gravis",
    "Halden",
    "Ivory Lane",
    "Juno Works",
    "Kestrel",
    "Moxie",
    "Nordvik",
    "Pellar",
    "Rivet & Co",
    "Sable",
    "Tamsin",
    "Ulvik",
    "Wexford",
]
PRODUCTS = [
    "blender",
    "air fryer",
    "kettle",
    "toaster",
    "rice cooker",
    "coffee grinder",
    "stand mixer",
    "frying pan",
    "headphones",
    "earbuds",
    "smartwatch",
    "phone charger",
    "power bank",
    "bluetooth speaker",
    "webcam",
    "keyboard",
    "mouse",
    "monitor",
    "desk lamp",
    "backpack",
    "rain jacket",
    "hiking boots",
    "running shoes",
    "wool scarf",
    "yoga mat",
    "water bottle",
    "tent",
    "sleeping bag",
    "camping stove",
    "vacuum cleaner",
    "hair dryer",
    "electric toothbrush",
    "board game",
    "puzzle",
    "drone",
    "tablet",
    "e-reader",
    "router",
    "space heater",
    "fan",
]
POSITIVE = [
    "I bought the {B} {P} for {$} and it works perfectly.",
    "The {P} from {B} was worth every cent of the {$} I paid.",
    "Great value: a {B} {P} for only {$}.",
    "My new {B} {P} is the best purchase I made this year.",
    "For {$} the {B} {P} feels like a premium product.",
    "Five stars for the {P} by {B}, quiet and well made.",
    "I love this {B} {P}; it was on sale for {$}.",
    "The {B} {P} arrived early and works better than my old one.",
    "Paid {$} for the {P} and {B} even added a spare part.",
    "Honestly the {B} {P} beats models that cost twice the {$} price.",
    "{B} support replaced my {P} within two days, very impressed.",
    "Still using the {B} {P} every day after a year, no problems.",
]
NEGATIVE = [
    "The {B} {P} broke after a week and cost me {$}.",
    "I returned the {P} from {B} because it stopped charging.",
    "Not worth {$}: the {B} {P} is flimsy and loud.",
    "Avoid the {B} {P}, it overheated on the first day.",
    "Spent {$} on a {B} {P} and the box arrived damaged.",
    "The {P} by {B} feels cheap even at {$}.",
    "{B} refused to refund my {P}, terrible service.",
    "My {B} {P} died after two uses; what a waste of {$}.",
    "The {B} {P} looks nice but the battery is useless.",
    "For {$} I expected the {B} {P} to last more than a month.",
    "The {P} from {B} leaks and smells of plastic.",
    "Do not buy the {B} {P}, mine cracked in the cold.",
]


def price(rng: random.Random) -> str:
    value = rng.choice([9, 12, 15, 19, 24, 29, 35, 39, 49, 59, 79, 89, 99, 129, 149, 199, 249])
    cents = rng.choice(["", ".99", ".95", ".50"])
    return rng.choice(["${v}{c}", "${v}{c}", "{v} dollars", "€{v}{c}"]).format(v=value, c=cents)


def render(template: str, rng: random.Random) -> tuple[list[str], list[str]]:
    fills = {
        "{B}": ("BRAND", rng.choice(BRANDS)),
        "{P}": ("PRODUCT", rng.choice(PRODUCTS)),
        "{$}": ("PRICE", price(rng)),
    }
    tokens: list[str] = []
    tags: list[str] = []
    for piece in template.replace("{", " {").replace("}", "} ").split():
        if piece in fills:
            kind, value = fills[piece]
            words = [w for w, _, _ in split_words(value)]
            tokens += words
            tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(words) - 1)
        else:
            for word, _, _ in split_words(piece):
                tokens.append(word)
                tags.append("O")
    return tokens, tags


def rows(n: int, rng: random.Random, templates: dict[str, list[str]]) -> list[dict]:
    out = []
    for i in range(n):
        sentiment = "positive" if i % 2 == 0 else "negative"
        tokens, tags = render(rng.choice(templates[sentiment]), rng)
        out.append({"tokens": tokens, "tags": tags, "sentiment": sentiment})
    return out


def main() -> None:
    rng = random.Random(7)
    # Test sentences come from templates never seen in training, so the score measures generalisation.
    train_t = {"positive": POSITIVE[:9], "negative": NEGATIVE[:9]}
    test_t = {"positive": POSITIVE[9:], "negative": NEGATIVE[9:]}
    out = Path(__file__).resolve().parents[1] / "src" / "mtst" / "demo" / "tagged"
    out.mkdir(parents=True, exist_ok=True)
    for split, n, templates in (("train", 240, train_t), ("validation", 60, train_t), ("test", 60, test_t)):
        path = out / f"{split}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows(n, rng, templates)), encoding="utf-8")
        print(path, n)


if __name__ == "__main__":
    main()
