"""PTB tokenisation exactly as pycocoevalcap's ``PTBTokenizer`` produces it, in pure Python (no Java).

pycocoevalcap joins every caption of a set into one document (one caption per line, newlines inside a
caption replaced by spaces), runs ``stanford-corenlp-3.4.1.jar``'s ``PTBTokenizer -preserveLines
-lowerCase`` on it and drops the tokens of its ``PUNCTUATIONS`` list. This module reimplements that
lexer's observable behaviour: a longest-match scanner over the same kinds of rules (words, numbers,
contractions, abbreviations, acronyms, URLs, quotes, dashes, ellipses, brackets, smileys, ...), each
rule written here from the behaviour measured on the jar (``tests/metrics`` compares the two).

The rules themselves (character classes, abbreviation and acronym patterns, token actions and the
prioritised rule list) live in :mod:`vislang.metrics._ptb_rules`; this module holds the scanner that
applies them, the whole-document shortcut for plain captions, and the public API.

Behaviour worth knowing (all identical to the jar):

- Contractions split: ``don't`` -> ``do n't``, ``it's`` -> ``it 's``; ``cannot`` -> ``can not``,
  ``gonna`` -> ``gon na``, ``'tis`` -> ``'t is``.
- Hyphenated words stay whole (``well-known``); 3-4 hyphens become ``--``; ``-5`` is a number.
- Quotes become the PTB forms `` ` `` / ``'`` / ````` / ``''`` (all in pycocoevalcap's punctuation list,
  so they are dropped). Brackets become ``-LRB-``, ``-RRB-``, ``-LSB-``, ``-RSB-``, ``-LCB-``, ``-RCB-``,
  which the jar lower-cases before pycocoevalcap compares them with its list: they survive as ``-lrb-``...
- Abbreviations keep their period (``co.``, ``mr.``, ``a.m.``); at a sentence end (next caption starts
  with a capital, or the end of the document) an abbreviation of the ``co.``/``etc.`` kind also yields
  a separate ``.``. Because the tokenizer sees the whole document, a caption's last token can depend on
  the first letter of the *next* caption: tokenise captions in the order pycocoevalcap joins them.
- An SGML tag whose quoted attribute value contains a line break swallows the break: the tag's token
  runs from one caption into the next, and the output lines stay aligned only by coincidence.
- Characters outside the Basic Multilingual Plane (most emoji) are deleted, like the jar's untokenizable
  characters (the jar scans UTF-16 code units); BMP symbols such as ``❤`` stay as tokens.
- Tokens are lower-cased with Python's ``str.lower``.

Known differences (inputs where vislang deliberately or unavoidably differs from the jar):

- Line separators other than ``\\n`` inside a caption (``\\r``, U+000B, U+000C, U+0085, U+2028,
  U+2029) make the jar emit extra output lines, which shifts every later caption onto the wrong image
  in pycocoevalcap. vislang treats them as spaces.
- Lower-casing of Greek capital sigma follows Python's final-sigma rule, which differs from Java's in
  a few contexts (e.g. ``Σ-Σ``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vislang.metrics._ptb_rules import ABBREV1, ABBREV2, ABBREV3, PUNCTUATIONS, RULES, SPACE, Rule

try:  # the regular-expression parser, to find which characters each rule can start with
    from re import _parser as _sre  # Python >= 3.11
except ImportError:  # pragma: no cover - Python 3.10
    import sre_parse as _sre  # type: ignore[no-redef]


# ---------------------------------------------------------------------------------------------------
# The scanner: at each position every rule that can start with the character there is tried and the
# longest match (trailing context included) wins, the earlier rule on a tie.


Ranges = list[tuple[int, int]]  # inclusive code point ranges


def _first_chars(items: Iterable, ignore_case: bool) -> tuple[Ranges | None, bool]:
    """Code points a parsed pattern can start with (None: any) and whether it can match empty."""
    ranges: Ranges = []
    for op, av in items:
        first, nullable = _first_chars_of_item(op, av, ignore_case)
        if first is None:
            return None, False
        ranges += first
        if not nullable:
            return ranges, False
    return ranges, True


def _with_case(ranges: Ranges, ignore_case: bool) -> Ranges:
    """Add the other case of the ASCII letters in ``ranges`` (enough for this lexer's patterns)."""
    if not ignore_case:
        return ranges
    extra = [(ord(chr(c).swapcase()),) * 2 for lo, hi in ranges for c in range(max(lo, 65), min(hi, 122) + 1)
             if chr(c).isalpha()]
    return ranges + extra


def _first_chars_of_item(op: Any, av: Any, ignore_case: bool) -> tuple[Ranges | None, bool]:
    if op is _sre.LITERAL:
        return _with_case([(av, av)], ignore_case), False
    if op is _sre.IN:
        ranges: Ranges = []
        for item_op, item_av in av:
            if item_op is _sre.LITERAL:
                ranges.append((item_av, item_av))
            elif item_op is _sre.RANGE:
                ranges.append(item_av)
            else:  # negated sets and categories: anything
                return None, False
        return _with_case(ranges, ignore_case), False
    if op is _sre.BRANCH:
        ranges, any_nullable = [], False
        for branch in av[1]:
            first, nullable = _first_chars(branch, ignore_case)
            if first is None:
                return None, False
            ranges += first
            any_nullable |= nullable
        return ranges, any_nullable
    if op is _sre.SUBPATTERN:
        _group, add_flags, del_flags, sub = av
        return _first_chars(sub, (ignore_case or bool(add_flags & re.I)) and not del_flags & re.I)
    if op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT):
        low, _high, sub = av
        first, nullable = _first_chars(sub, ignore_case)
        return first, nullable or low == 0
    if op in (_sre.AT, _sre.ASSERT, _sre.ASSERT_NOT):
        return [], True
    return None, False


@dataclass(frozen=True)
class _Candidate:
    rule: Rule
    pattern: re.Pattern


class _Dispatch:
    """For each character, the (rule, pattern) pairs whose match can start with it, in priority order."""

    def __init__(self, rules: Sequence[Rule]):
        self._entries: list[tuple[_Candidate, re.Pattern | None]] = []
        for rule in rules:
            for pattern in rule.patterns:
                first, nullable = _first_chars(_sre.parse(pattern.pattern), False)
                starts = None
                if first is not None and not nullable:  # a character class of the possible first characters
                    starts = re.compile("[" + "".join(f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in first) + "]")
                self._entries.append((_Candidate(rule, pattern), starts))
        self._by_char: dict[str, tuple[_Candidate, ...]] = {}

    def __call__(self, char: str) -> tuple[_Candidate, ...]:
        candidates = self._by_char.get(char)
        if candidates is None:
            candidates = tuple(c for c, starts in self._entries if starts is None or starts.match(char))
            self._by_char[char] = candidates
        return candidates


@functools.cache
def _dispatch() -> _Dispatch:
    return _Dispatch(RULES)


@dataclass(frozen=True)
class Token:
    """A token and the span of text it came from (``text[start:end]``; ``end`` includes no pushback)."""

    text: str
    start: int
    end: int


def _lex(text: str, start: int, stop: int, debug: list | None = None) -> tuple[list[Token], int]:
    """Tokens of ``text`` from ``start`` until a token ends at or after ``stop``, and where scanning stopped.

    ``text`` beyond ``stop`` is looked at as trailing context, and a token may run past ``stop`` (the jar's
    SGML tags may contain line breaks); the returned position then lies beyond ``stop``.
    """
    candidates_for = _dispatch()
    tokens: list[Token] = []
    pos = start
    while pos < stop:
        best_rule, best_total, best_len = None, 0, 0
        for candidate in candidates_for(text[pos]):
            m = candidate.pattern.match(text, pos)
            if m is not None and m.end() - pos > best_total:
                best_rule, best_total, best_len = candidate.rule, m.end() - pos, m.end(1) - pos
        assert best_rule is not None  # the untokenizable rule matches any character
        token, pushback = best_rule.action(text[pos: pos + best_len])
        if debug is not None:
            debug.append((best_rule.name, text[pos: pos + best_len], token, pushback))
        end = pos + best_len - pushback
        if token is not None:
            tokens.append(Token(token, pos, end))
        pos = end
    return tokens, pos


def _lex_texts(text: str, start: int, stop: int) -> list[str]:
    """Token texts of ``text[start:stop]`` (no token runs past ``stop``)."""
    return [t.text for t in _lex(text, start, stop)[0]]


# ---------------------------------------------------------------------------------------------------
# Scanning a line chunk by chunk (chunks are separated by spaces or tabs) is exact when no token can span
# a space: the tokens of a chunk then depend only on the chunk and on what follows it. A chunk not ending
# in "." only looks one character ahead, so its tokens are memoised per document.

# Tokens that may contain a space: SGML tags, fractions ("5 1/2"), phone numbers, spaced ellipses.
_SPANS_SPACE = re.compile("<|[0-9)][ \u00a0][0-9]|\\.[ \u00a0]\\.")
_CHUNK = re.compile("[^ \t]+")  # no token contains a space or tab, except those _SPANS_SPACE detects
_PLAIN_CHUNK = re.compile(r"([A-Za-z0-9]+)([.,]?)")  # a word and its comma or period: no scanner needed
_OTHER_SPACES = "\u00a0\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u3000"
_TRAILING_SPACES = f"{SPACE[:-1]}]*$"
_ENDS_WITH_PERIOD = re.compile(f"\\.{_TRAILING_SPACES}")


def _chunk_tokens(document: str, start: int, end: int, memo: dict[tuple[str, str], list[str]]) -> list[str]:
    """Tokens (original case) of the line ``document[start:end]``, which has nothing _SPANS_SPACE finds."""
    tokens: list[str] = []
    for m in _CHUNK.finditer(document, start, end):
        chunk, chunk_start = m.group(), m.start()
        if chunk_start > start:  # the space before a chunk also swallows the other spaces after it
            chunk = chunk.lstrip(_OTHER_SPACES)
            chunk_start = m.end() - len(chunk)
            if not chunk:
                continue
        plain = _PLAIN_CHUNK.fullmatch(chunk)
        if plain and plain[1].lower() not in _ASSIMILATED and not (plain[2] == "." and _ABBREVIATION.fullmatch(chunk)):
            tokens.extend([plain[1], plain[2]] if plain[2] else [plain[1]])
            continue
        if _ENDS_WITH_PERIOD.search(chunk):  # may be an abbreviation whose tokens depend on the next words
            tokens.extend(_lex_texts(document, chunk_start, m.end()))
            continue
        follow = document[m.end(): m.end() + 1]
        key = (chunk, follow)
        chunk_tokens = memo.get(key)
        if chunk_tokens is None:
            chunk_tokens = memo[key] = _lex_texts(chunk + follow, 0, len(chunk))
        tokens.extend(chunk_tokens)
    return tokens


def _scan_lines(document: str, line_starts: np.ndarray, first: int, memo: dict[tuple[str, str], list[str]]
                ) -> list[str]:
    """The jar's output lines for line ``first`` and for the following lines its tokens run into."""
    start, stop = int(line_starts[first]), int(line_starts[first + 1]) - 1  # stop: the line's end
    if not _SPANS_SPACE.search(document, start, stop):
        return [" ".join(_chunk_tokens(document, start, stop, memo))]
    tokens, pos = _lex(document, start, stop)
    while pos > stop:  # the last token ran into a following line: scan to that line's end too
        last_line = int(np.searchsorted(line_starts, pos, side="right")) - 1
        stop = int(line_starts[last_line + 1]) - 1
        more, pos = _lex(document, pos, stop)
        tokens.extend(more)
    # Tokens are separated by a space, or by the line breaks between them; a token may contain one.
    parts = []
    for previous, token in zip([None, *tokens], tokens):
        if previous is not None:
            parts.append("\n" * document.count("\n", previous.end, token.start) or " ")
        parts.append(token.text)
    lines = "".join(parts).split("\n")
    return lines + [""] * (document.count("\n", start, stop) + 1 - len(lines))


# ---------------------------------------------------------------------------------------------------
# Public API.

_LINE_BREAKS = re.compile("[\r\n\u2028\u2029\u000b\u000c\u0085]")
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")
_SPACE_RUNS = re.compile(" {2,}")
_NEEDS_CLEANING = re.compile("[\r\u2028\u2029\u000b\u000c\u0085\U00010000-\U0010ffff]")
_SURROGATE_PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")


def _to_utf16_units(match: re.Match) -> str:
    code = ord(match.group()) - 0x10000
    return chr(0xD800 + (code >> 10)) + chr(0xDC00 + (code & 0x3FF))


def _from_utf16_units(match: re.Match) -> str:
    high, low = match.group()
    return chr(0x10000 + ((ord(high) - 0xD800) << 10) + (ord(low) - 0xDC00))


def _clean(caption: str) -> str:
    """A caption as one line of the document the jar sees (see the module notes on line separators).

    Characters beyond the BMP become their two UTF-16 code units, which is what the jar's lexer scans.
    """
    caption = _LINE_BREAKS.sub(" ", caption)
    return _ASTRAL.sub(_to_utf16_units, caption)


# Whole-document shortcut: most captions are plain ASCII words with commas and final periods. Their
# tokens are computed for the whole document with a few string operations; the lines that are not plain,
# or that may hold a word the scanner treats specially, go through the scanner. The checks run on the
# document's bytes with numpy.


# Byte classes of the shortcut's checks (characters beyond ASCII become "?", an "other" character).
_OTHER, _LETTER, _DIGIT, _SPACE, _NEWLINE, _PERIOD, _COMMA = range(7)
_BYTE_CLASS = bytearray([_OTHER] * 256)
for _chars, _cls in (("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", _LETTER), ("0123456789", _DIGIT),
                     (" ", _SPACE), ("\n", _NEWLINE), (".", _PERIOD), (",", _COMMA)):
    for _c in _chars.encode():
        _BYTE_CLASS[_c] = _cls
_BYTE_CLASS = bytes(_BYTE_CLASS)
_ABBREVIATION = re.compile(f"{ABBREV1}|{ABBREV2}|{ABBREV3}")
_LONGEST_ABBREVIATION = 7  # letters before the period (e.g. "Bancorp.")
# Words split by assimilation rules ("can not", "gon na").
_ASSIMILATED = {w: re.compile(rf"\b(?i:{w})\b") for w in ("cannot", "gonna", "gotta", "lemme", "gimme", "wanna")}


def _lines_for_scanner(document: str, lowered: str) -> np.ndarray:
    """Indices of the lines (of the newline-joined ``document``) the shortcut cannot handle."""
    cls = np.frombuffer(document.encode("ascii", "replace").translate(_BYTE_CLASS), dtype=np.uint8)  # [T]
    is_word = (cls == _LETTER) | (cls == _DIGIT)
    is_punct = (cls == _PERIOD) | (cls == _COMMA)
    at_chunk_end = np.r_[(cls[1:] == _SPACE) | (cls[1:] == _NEWLINE), True]
    after_word = np.r_[False, is_word[:-1]]
    flagged = cls == _OTHER  # other characters
    flagged |= is_punct & ~(after_word & at_chunk_end)  # "a.b", "..", " ,"
    flagged[:-2] |= (cls[:-2] == _DIGIT) & (cls[1:-1] == _SPACE) & (cls[2:] == _DIGIT)  # "12 345": a phone number?
    positions = np.flatnonzero(flagged).tolist()

    # Possible abbreviations: periods after a word of 1-7 letters.
    periods = np.flatnonzero(cls == _PERIOD)
    letters_before = np.zeros(len(periods), dtype=np.int64)  # [P] letters immediately before each period
    still_letter = np.ones(len(periods), dtype=bool)
    for back in range(1, _LONGEST_ABBREVIATION + 2):
        index = periods - back
        still_letter &= index >= 0
        still_letter[still_letter] &= cls[index[still_letter]] == _LETTER
        letters_before += still_letter
    short = (letters_before >= 1) & (letters_before <= _LONGEST_ABBREVIATION)
    is_abbreviation: dict[str, bool] = {}
    for start, end in zip((periods[short] - letters_before[short]).tolist(), periods[short].tolist()):
        if start > 0 and is_word[start - 1]:
            continue  # the letters end a longer word
        word = document[start: end + 1]
        if word not in is_abbreviation:
            is_abbreviation[word] = _ABBREVIATION.fullmatch(word) is not None
        if is_abbreviation[word]:
            positions.append(end)

    for word, pattern in _ASSIMILATED.items():
        if word in lowered:
            positions.extend(m.start() for m in pattern.finditer(document))
    newlines = np.flatnonzero(cls == _NEWLINE)
    return np.unique(np.searchsorted(newlines, positions))  # line index = newlines before the position


def _tokenize(captions: Sequence[str], drop_punctuation: bool) -> list[str]:
    """Lower-cased tokens of each caption, space-separated, with or without pycocoevalcap's punctuation."""
    if not captions:
        return []
    lines = [c.replace("\n", " ") for c in captions]
    document = "\n".join(lines)
    if not document.isascii() and _NEEDS_CLEANING.search(document):
        lines = [_clean(c) for c in lines]
        document = "\n".join(lines)
    lowered = document.lower()  # may change lengths beyond ASCII, but such lines go to the scanner
    if drop_punctuation:
        plain = lowered.replace(".", "").replace(",", "")
    else:
        plain = lowered.replace(".", " .").replace(",", " ,")
    if "  " in plain:
        plain = _SPACE_RUNS.sub(" ", plain)
    out = [line.strip(" ") for line in plain.split("\n")]

    line_starts = np.cumsum([0] + [len(line) + 1 for line in lines])  # [L + 1] (one past the end: L + 1)
    memo: dict[tuple[str, str], list[str]] = {}
    done = 0  # lines before this one have their final output
    for i in _lines_for_scanner(document, lowered).tolist():
        if i < done:
            continue
        for k, line_out in enumerate(_scan_lines(document, line_starts, i, memo), start=i):
            line_out = _SURROGATE_PAIR.sub(_from_utf16_units, line_out.lower())
            if drop_punctuation:  # what pycocoevalcap does with each output line
                line_out = " ".join(w for w in line_out.rstrip().split(" ") if w not in PUNCTUATIONS)
            out[k] = line_out
            done = k + 1
    return out


def ptb_tokenize_lines(captions: Sequence[str]) -> list[str]:
    """The jar's output for ``captions`` joined into one document: one line of lower-cased tokens each.

    Punctuation is kept (see :func:`tokenize_captions`).
    """
    return _tokenize(captions, drop_punctuation=False)


def tokenize_captions(captions: Sequence[str]) -> list[str]:
    """Tokenised captions exactly as pycocoevalcap's ``PTBTokenizer`` returns them, in input order."""
    return _tokenize(captions, drop_punctuation=True)


class PTBTokenizer:
    """Drop-in for ``pycocoevalcap.tokenizer.ptbtokenizer.PTBTokenizer`` without Java."""

    def tokenize(self, captions_for_image: Mapping[Any, Iterable[Any]]) -> dict[Any, list[str]]:
        """Tokenise ``{image_id: [caption or {"caption": ...}, ...]}`` as one document, like pycocoevalcap."""
        items = [list(v) for v in captions_for_image.values()]
        try:
            texts = [c["caption"] for v in items for c in v]
        except TypeError:  # plain strings
            texts = [c["caption"] if isinstance(c, Mapping) else c for v in items for c in v]
        tokens = tokenize_captions(texts)
        result: dict[Any, list[str]] = {}
        position = 0
        for key, v in zip(captions_for_image, items):
            result[key] = tokens[position: position + len(v)]
            position += len(v)
        return result
