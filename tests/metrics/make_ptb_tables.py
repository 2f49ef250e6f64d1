"""Regenerate ``vislang/metrics/_ptb_tables.py`` by probing the Stanford PTBTokenizer jar of pycocoevalcap.

Every Basic Multilingual Plane character (except line separators and surrogates) is tokenised by the jar
in a few contexts, one per line: alone (untokenizable characters vanish), between letters ("a?b": letters
and word marks stay in one token), as a number with a thousands separator ("?,???": digits do), doubled with
a hyphen ("?-?": only [:letter:] and [:digit:] characters make one hyphenated token), and after an
abbreviation ("x co. ?": an upper-case letter ends the sentence, which repeats the period). Needs Java and
pycocoevalcap. Usage: ``python tests/metrics/make_ptb_tables.py [--out PATH]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "vislang" / "metrics" / "_ptb_tables.py"
LINE_SEPARATORS = {0x0A, 0x0B, 0x0C, 0x0D, 0x85, 0x2028, 0x2029}


def jar_path() -> Path:
    import pycocoevalcap.tokenizer.ptbtokenizer as ptb

    return Path(ptb.__file__).resolve().parent / ptb.STANFORD_CORENLP_3_4_1_JAR


def run_jar(lines: list[str]) -> list[str]:
    """The jar's output lines (tokens kept, lower-cased) for ``lines`` joined into one document."""
    with tempfile.NamedTemporaryFile("wb", suffix=".txt", delete=False) as f:
        f.write("\n".join(lines).encode("utf-8"))
    try:
        out = subprocess.run(["java", "-cp", str(jar_path()), "edu.stanford.nlp.process.PTBTokenizer",
                              "-preserveLines", "-lowerCase", f.name], capture_output=True, check=True)
    finally:
        os.unlink(f.name)
    result = out.stdout.decode("utf-8").split("\n")
    assert len(result) >= len(lines), "the jar lost lines"
    return result[: len(lines)]


def one_token(output: str, text: str) -> bool:
    return output in (text, text.lower())


def ranges(codes: set[int]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for c in sorted(codes):
        if out and out[-1][1] == c - 1:
            out[-1][1] = c
        else:
            out.append([c, c])
    return [(a, b) for a, b in out]


def class_body(codes: set[int]) -> str:
    parts = [f"\\u{a:04X}" if a == b else f"\\u{a:04X}-\\u{b:04X}" for a, b in ranges(codes)]
    lines, current = [], ""
    for part in parts:
        if len(current) + len(part) > 96:
            lines.append(current)
            current = ""
        current += part
    lines.append(current)
    return "(\n" + "\n".join(f'    "{line}"' for line in lines) + "\n)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    codes = [c for c in range(0x80, 0x10000) if not 0xD800 <= c <= 0xDFFF and c not in LINE_SEPARATORS]
    chars = [chr(c) for c in codes]
    alone = run_jar(chars)
    between = run_jar([f"a{ch}b" for ch in chars])
    number = run_jar([f"{ch},{ch * 3}" for ch in chars])
    tokenizable = {c for c, out in zip(codes, alone) if out}
    digits = {c for c, ch, out in zip(codes, chars, number) if c in tokenizable and one_token(out, f"{ch},{ch * 3}")}
    wordlike = {c for c, ch, out in zip(codes, chars, between)
                if c in tokenizable and c not in digits and one_token(out, f"a{ch}b")}
    symbols = tokenizable - digits - wordlike

    candidates = sorted(wordlike)
    hyphenated = run_jar([f"{chr(c)}-{chr(c)}" for c in candidates])
    letters = {c for c, out in zip(candidates, hyphenated) if one_token(out, f"{chr(c)}-{chr(c)}")}
    letters.add(0x03A3)  # capital sigma: a letter, but Java lower-cases "Σ-Σ" to "σ-ς", so the check misses it
    extras = (wordlike - letters) | {0x00AD}  # soft hyphen: allowed inside words, removed from them

    letter_list = sorted(letters | set(range(65, 91)) | set(range(97, 123)))
    sentence_end = run_jar([f"x co. {chr(c)}" for c in letter_list])
    uppercase = {c for c, out in zip(letter_list, sentence_end) if out.startswith("x co. .")}

    header = '''"""Character classes of the Stanford PTBTokenizer 3.4.1 lexer (Basic Multilingual Plane, beyond ASCII).

Derived by probing ``stanford-corenlp-3.4.1.jar`` one character at a time in several contexts
(``tests/metrics/make_ptb_tables.py`` regenerates this file); the jar's lexer was generated with an
older Unicode version than Python's, so ``str.isalpha`` cannot stand in for these. Each constant is the
body of a regular-expression character class.
"""

'''
    sections = [
        ("# Characters the lexer's [:letter:] class accepts (beyond A-Z, a-z).", "LETTERS", letters - set(range(128))),
        ("# Marks and signs that may continue (or start) a plain word although they are not letters.",
         "WORD_EXTRAS", extras),
        ("# Characters of the lexer's [:digit:] class beyond 0-9 (NKo digits U+07C0-U+07C9 included).",
         "DIGITS", digits),
        ("# Characters of the lexer's [:uppercase:] class beyond A-Z.", "UPPERCASE", uppercase - set(range(128))),
        ("# Characters that form a token on their own (symbols, punctuation, quotes, dashes, currency signs).",
         "SYMBOLS", symbols),
    ]
    body = "\n\n".join(f"{comment}\n{name} = {class_body(values)}" for comment, name, values in sections)
    args.out.write_text(header + body + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
