"""Text: a COCO-style word tokenizer with a vocabulary, and Hugging Face ``tokenizers`` files.

Both tokenizers share one small interface (:class:`TextTokenizer`): ``encode`` to ids with optional
BOS/EOS and truncation, ``decode`` back to text, ``pad_id`` / ``bos_id`` / ``eos_id`` and ``len()``.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from vislang.errors import DataError
from vislang.utils.io import atomic_write_json

VOCAB_FILE = "vocab.json"  # a Vocabulary saved beside a checkpoint's weights

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)

# Words (letters, digits and ``_``, with inner apostrophes like "don't" or "o’clock", slashes like "and/or" and
# hyphens like "medium-light"), numbers ("0.25", "1,000", "5:30", "-1", ".25"), acronyms and the abbreviations
# the PTB tokenizer keeps whole ("u.s.", "mrs.", "st."), and every other symbol ("(", "#", "&", an emoji) as its
# own token. The punctuation the COCO evaluation drops after its PTB tokenizer (. , : ; ! ? quotes, dashes) is
# dropped, but not "!!" or "?!", which it keeps (punctuation alone is still no words: :func:`has_words`). So a
# caption written from these tokens, joined by spaces, is read by the COCO evaluation as the original was:
# "A button (blood type)", "keycap: #", "five o’clock" and "flag: St. Helena" are written "a button ( blood
# type )", "keycap #", "five o’clock", "flag st. helena". Hyphenated words stay whole because the PTB tokenizer
# keeps them whole: a model that learnt "medium light" would be scored against "medium-light" and miss both
# unigrams.
_ABBREVIATIONS = ("mr", "mrs", "ms", "dr", "st", "jr", "sr", "prof", "etc", "vs")
_TOKEN = re.compile(r"(?:[^\W\d_]\.){2,}"                                     # acronyms: u.s., e.g.
                    r"|\b(?:" + "|".join(_ABBREVIATIONS) + r")\."             # abbreviations: mrs., st.
                    r"|\d+(?:[.,:]\d+)+"                                      # 3.5, 1,000, 5:30
                    r"|\w+(?:['\u2019/-]\w+)*"                               # words
                    r"|(?<!\w)(?:[+-]\.?|\.)\d+(?:[.,]\d+)*|[!?]{2,}"          # +1, -1, .25, !!, ?!
                    r"|[^\w\s.,:;!?'\"`\u2018\u2019\u201c\u201d\u2026\u2013\u2014-]")  # other symbols
# Vocabularies saved before the rules above (no "tokenizer" field) split text as they were built: punctuation
# and ASCII symbols dropped, the right single quote read as an apostrophe.
_TOKEN_V1 = re.compile(r"\d+(?:[.,]\d+)+|[^\W_]+(?:['-][^\W_]+)*|[^\w\s"
                       + re.escape("!\"#%&'()*+,-./:;<=>?@[\\]^_`{|}~") + r"]")
TOKENIZER_VERSION = 2


def tokenize(text: str, version: int = TOKENIZER_VERSION) -> list[str]:
    """Lower-case, NFKC-normalise and split a caption into words and symbols; punctuation is dropped.

    >>> tokenize("A man's red-and-white Kite - flying at 3.5 m!")
    ['a', "man's", 'red-and-white', 'kite', 'flying', 'at', '3.5', 'm']
    >>> tokenize("Mrs. Claus: B button (blood type), keycap: #")
    ['mrs.', 'claus', 'b', 'button', '(', 'blood', 'type', ')', 'keycap', '#']
    """
    text = unicodedata.normalize("NFKC", text).lower()
    if version == 1:
        return _TOKEN_V1.findall(text.replace("\u2019", "'"))
    return _TOKEN.findall(text)


def has_words(text: str) -> bool:
    """Whether ``text`` has a token other than a run of ``!`` and ``?`` (punctuation alone has no words)."""
    return any(t.strip("!?") for t in tokenize(text))


def _specials_and_length(ids: list[int], bos_id: int, eos_id: int, add_special: bool,
                         max_len: int | None) -> list[int]:
    """``ids`` wrapped in BOS/EOS with ``add_special``, then cut to ``max_len`` (keeping EOS): the end of every
    tokenizer's ``encode``."""
    if add_special:
        ids = [bos_id, *ids, eos_id]
    if max_len is not None and len(ids) > max_len:
        ids = ids[:max_len - 1] + [eos_id] if add_special else ids[:max_len]
    return ids


@runtime_checkable
class TextTokenizer(Protocol):
    """What models and collate functions need from a tokenizer."""

    pad_id: int
    bos_id: int
    eos_id: int

    def __len__(self) -> int: ...

    def encode(self, text: str, add_special: bool = True, max_len: int | None = None) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


class Vocabulary:
    """Word vocabulary with special tokens ``<pad>=0, <bos>=1, <eos>=2, <unk>=3``.

    Args:
        words: Words after the special tokens, in id order.
        tokenizer: The version of :func:`tokenize`'s rules it splits text with (1: a vocabulary saved before
            version 2).
    """

    def __init__(self, words: Iterable[str] = (), tokenizer: int = TOKENIZER_VERSION):
        self.tokenizer = tokenizer
        self.itos: list[str] = list(SPECIALS)
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(self.itos)}
        for w in words:
            if w not in self.stoi:
                self.stoi[w] = len(self.itos)
                self.itos.append(w)
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = (self.stoi[s] for s in SPECIALS)

    @classmethod
    def build(cls, texts: Iterable[str], min_freq: int = 1, max_size: int | None = None) -> Vocabulary:
        """Vocabulary of words seen at least ``min_freq`` times, most frequent first (ties alphabetical).

        Args:
            texts: Captions or questions.
            min_freq: Words rarer than this map to ``<unk>``.
            max_size: Keep at most this many words besides the specials.
        """
        counts = Counter(w for t in texts for w in tokenize(t))
        words = sorted((w for w, c in counts.items() if c >= min_freq and w not in SPECIALS),
                       key=lambda w: (-counts[w], w))
        return cls(words[:max_size] if max_size is not None else words)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, word: str) -> bool:
        return word in self.stoi

    def tokenize(self, text: str) -> list[str]:
        """The words of ``text`` as this vocabulary splits it."""
        return tokenize(text, self.tokenizer)

    def encode(self, text: str, add_special: bool = True, max_len: int | None = None) -> list[int]:
        """Token ids of ``text``; with ``add_special`` wrapped in BOS/EOS. ``max_len`` truncates (keeping EOS)."""
        ids = [self.stoi.get(w, self.unk_id) for w in self.tokenize(text)]
        return _specials_and_length(ids, self.bos_id, self.eos_id, add_special, max_len)

    def decode(self, ids: Sequence[int]) -> str:
        """Words for ``ids``, stopping at EOS and skipping PAD/BOS."""
        words = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i in (self.pad_id, self.bos_id):
                continue
            words.append(self.itos[i] if 0 <= i < len(self.itos) else UNK)
        return " ".join(words)

    def save(self, path: str | os.PathLike) -> None:
        """Write the vocabulary as JSON (atomically)."""
        atomic_write_json(path, {"format": "vislang-vocab", "version": 1, "tokenizer": self.tokenizer,
                                 "itos": self.itos})

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocabulary:
        """Read a vocabulary written by :meth:`save`."""
        from vislang.data.readers import load_format

        data = load_format(path, "vislang-vocab", "not a vislang vocabulary file")
        itos = data.get("itos")
        if not isinstance(itos, list) or list(itos[:len(SPECIALS)]) != list(SPECIALS) or \
                not all(isinstance(w, str) for w in itos) or len(set(itos)) != len(itos):
            raise DataError("must be a list of distinct strings starting with the special tokens",
                            path=str(path), field="itos")
        version = data.get("tokenizer", 1)
        if version not in (1, TOKENIZER_VERSION):
            raise DataError(f"tokenizer version {version!r}: this vislang reads 1 and {TOKENIZER_VERSION}",
                            path=str(path), field="tokenizer")
        return cls(itos[len(SPECIALS):], tokenizer=version)


class HFTokenizer:
    """A Hugging Face ``tokenizers`` JSON file behind the :class:`TextTokenizer` interface.

    Special ids are taken from the file's own special tokens: ``[PAD]``/``<pad>``, ``[CLS]``/``<s>``/
    ``<bos>`` as BOS and ``[SEP]``/``</s>``/``<eos>`` as EOS (a ``<|endoftext|>``-only vocabulary uses it
    for all three). ``unk_id`` is the id of the model's unknown token, None for a model without one (byte-level
    BPE reads every string).

    Args:
        path: ``tokenizer.json`` file, or a folder holding one.
    """

    def __init__(self, path: str | os.PathLike):
        try:
            from tokenizers import Tokenizer
        except ImportError as e:  # pragma: no cover - in the hf and dev extras
            raise DataError("Hugging Face tokenizer files need `pip install 'vislang[hf]'`") from e
        p = Path(path)
        if p.is_dir():
            p = p / "tokenizer.json"
        if not p.exists():
            raise DataError("tokenizer file not found", path=str(p))
        try:
            self.tok = Tokenizer.from_file(str(p))
        except Exception as e:  # tokenizers raises a bare Exception on bad files
            raise DataError(f"not a Hugging Face tokenizer file ({e})", path=str(p)) from None
        self.tok.no_padding()
        self.tok.no_truncation()
        self.path = str(p)
        vocab = self.tok.get_vocab(with_added_tokens=True)

        def first(*names: str) -> int | None:
            return next((vocab[n] for n in names if n in vocab), None)

        fallback = first("<|endoftext|>")
        pad, bos, eos = (first("[PAD]", "<pad>"), first("[CLS]", "<s>", "<bos>"),
                         first("[SEP]", "</s>", "<eos>"))
        if None in (pad, bos, eos) and fallback is None:
            raise DataError("tokenizer has no recognisable pad/bos/eos special tokens", path=str(p))
        self.pad_id = pad if pad is not None else fallback
        self.bos_id = bos if bos is not None else fallback
        self.eos_id = eos if eos is not None else fallback
        unk = getattr(self.tok.model, "unk_token", None)
        self.unk_id: int | None = vocab.get(unk) if unk else None

    def __len__(self) -> int:
        return self.tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_special: bool = True, max_len: int | None = None) -> list[int]:
        ids = self.tok.encode(text, add_special_tokens=False).ids
        return _specials_and_length(ids, self.bos_id, self.eos_id, add_special, max_len)

    def decode(self, ids: Sequence[int]) -> str:
        out = []
        for i in ids:
            i = int(i)
            if i == self.eos_id and out:
                break
            if i not in (self.pad_id, self.bos_id, self.eos_id):
                out.append(i)
        return self.tok.decode(out, skip_special_tokens=True)


def knows_no_word(tokenizer: TextTokenizer, text: str) -> bool:
    """Whether ``text`` gives ``tokenizer`` nothing to read: no token at all (e.g. only punctuation for a
    :class:`Vocabulary`), or only its unknown token (emoji or words it never saw). A tokenizer without an
    unknown token (``unk_id``) reads every non-empty text, so only an empty one counts."""
    ids = tokenizer.encode(text, add_special=False)
    unk = getattr(tokenizer, "unk_id", None)
    return not ids or (unk is not None and all(i == unk for i in ids))


def read_texts(path: str | os.PathLike) -> list[tuple[int, str]]:
    """The non-blank lines of a UTF-8 text file, stripped, with their line numbers (from 1).

    Raises:
        DataError: Naming the file: missing, a directory, unreadable, or not UTF-8 (naming the line).
    """
    from vislang.data.readers import read_text_file

    lines = read_text_file(path).split("\n")
    return [(n, line.strip()) for n, line in enumerate(lines, 1) if line.strip()]


def load_tokenizer(path: str | os.PathLike) -> TextTokenizer:
    """Load a vislang vocabulary JSON or a Hugging Face ``tokenizer.json`` (or a folder with one)."""
    p = Path(path)
    if p.is_file():
        from vislang.data.readers import load_json

        head = load_json(p)
        if isinstance(head, dict) and head.get("format") == "vislang-vocab":
            return Vocabulary.load(p)
    return HFTokenizer(p)


__all__ = ["HFTokenizer", "TextTokenizer", "Vocabulary", "knows_no_word", "load_tokenizer", "read_texts", "tokenize"]
