"""Build ``tests/metrics/data/real_captions.json``, the real-text corpus of the caption-metric tests.

Sources (installed once on the development machine; the fixture is committed so tests never need them):

- emojibase-data (npm): ``npm install --prefix /tmp/npmx emojibase-data`` gives
  ``/tmp/npmx/node_modules/emojibase-data/en/data.json`` (emoji labels and tags);
- Tux Paint stamps (Debian package ``tuxpaint-stamps-default``): ``apt-get download`` and ``dpkg-deb -x`` into
  ``/tmp/tux`` give ``/tmp/tux/usr/share/tuxpaint/stamps/**/*.txt`` (first line: an English sentence).

Each "image" has 3-6 references built from one source entry (the label or sentence as written, lower-cased,
with tags, as a sentence, with the emoji itself, ...) and one candidate: a reference perturbed by seeded
edits (dropped, swapped, duplicated or replaced words, changed case and punctuation, contractions, empty
captions). Usage: ``python tests/metrics/make_real_corpus.py [--emoji PATH] [--tux DIR] [--out PATH]``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "data" / "real_captions.json"
EMOJI_JSON = Path("/tmp/npmx/node_modules/emojibase-data/en/data.json")
TUX_STAMPS = Path("/tmp/tux/usr/share/tuxpaint/stamps")
EXTRA_WORDS = ["the", "a", "very", "small", "big", "red", "dog", "it's", "don't", "well-known", "U.S.", "co.",
               "(maybe)", "3.5", "1,000", "two", "--", "...", "\"nice\"", "'cool'", "café"]


def perturb(caption: str, rng: random.Random) -> str:
    """A seeded, caption-like edit of ``caption``."""
    if rng.random() < 0.03:
        return ""
    words = caption.split()
    for _ in range(rng.randint(1, 4)):
        op = rng.random()
        if not words:
            words = [rng.choice(EXTRA_WORDS)]
        i = rng.randrange(len(words))
        if op < 0.25 and len(words) > 1:
            del words[i]
        elif op < 0.45:
            j = rng.randrange(len(words))
            words[i], words[j] = words[j], words[i]
        elif op < 0.6:
            words.insert(i, rng.choice(EXTRA_WORDS))
        elif op < 0.7:
            words.insert(i, words[i])
        elif op < 0.8:
            words[i] = words[i].upper() if rng.random() < 0.5 else words[i].capitalize()
        else:
            words[i] = words[i] + rng.choice([",", ".", "!", "?", ";", ":", "'s", "n't"])
    text = " ".join(words)
    return text + rng.choice(["", "", ".", "!", " ."])


def emoji_images(path: Path, rng: random.Random, count: int) -> list[dict]:
    entries = [e for e in json.loads(path.read_text(encoding="utf-8")) if e.get("tags")]
    images = []
    for entry in rng.sample(entries, count):
        label, tags = entry["label"], entry["tags"]
        refs = [label, label.capitalize() + ".", ", ".join(tags), f"A {label} emoji {entry['emoji']}.",
                f"{label.title()}: {' '.join(tags[:3])}"]
        refs = refs[: rng.randint(3, len(refs))]
        images.append({"source": "emojibase", "references": refs, "candidate": perturb(rng.choice(refs), rng)})
    return images


def tux_images(root: Path, rng: random.Random, count: int) -> list[dict]:
    sentences = []
    for txt in sorted(root.rglob("*.txt")):
        first = txt.read_text(encoding="utf-8", errors="replace").splitlines()[:1]
        if first and first[0].strip():
            sentences.append(first[0].strip())
    images = []
    for sentence in rng.sample(sentences, count):
        refs = [sentence, sentence.lower(), sentence.rstrip(".!") + " in a picture.",
                "This is " + sentence[:1].lower() + sentence[1:], perturb(sentence, rng), sentence.upper()]
        refs = refs[: rng.randint(3, len(refs))]
        images.append({"source": "tuxpaint", "references": refs, "candidate": perturb(sentence, rng)})
    return images


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emoji", type=Path, default=EMOJI_JSON)
    parser.add_argument("--tux", type=Path, default=TUX_STAMPS)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for source in (args.emoji, args.tux):
        if not source.exists():
            print(f"error: {source} not found (see this script's docstring)", file=sys.stderr)
            return 2
    rng = random.Random(args.seed)
    images = emoji_images(args.emoji, rng, 200) + tux_images(args.tux, rng, 200)
    rng.shuffle(images)
    for i, image in enumerate(images):
        image["image_id"] = i
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"images": images}, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    print(f"wrote {len(images)} images to {args.out} ({args.out.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
