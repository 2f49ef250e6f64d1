"""Word tokenizer, vocabulary save/load, and Hugging Face tokenizer files."""

from __future__ import annotations

import json

import pytest

from vislang.data.text import HFTokenizer, TextTokenizer, Vocabulary, load_tokenizer, tokenize
from vislang.errors import DataError


def test_tokenize_coco_style():
    assert tokenize("A man's red-and-white Kite, flying at 3.5 m!") == [
        "a", "man's", "red-and-white", "kite", "flying", "at", "3.5", "m"]
    # hyphens inside words stay (as in the PTB tokenizer the COCO evaluation uses); others are punctuation
    assert tokenize("medium-light skin - tone -- x- -y") == ["medium-light", "skin", "tone", "x", "y"]
    assert tokenize("Don\u2019t  STOP\n") == ["don\u2019t", "stop"]  # the quote kept: the PTB tokenizer reads both
    assert tokenize("café au lait 😀") == ["café", "au", "lait", "😀"]
    assert tokenize("") == [] and tokenize("  ...  ") == []
    assert tokenize("ﬁsh") == ["fish"]  # NFKC folds the ligature


@pytest.mark.parametrize("caption", [
    "A button (blood type)", "keycap: #", "keycap: *", "five o\u2019clock", "flag: St. Helena", "Mrs. Claus",
    "flag: U.S. Virgin Islands", "flag: Trinidad & Tobago", "flag: C\u00f4te d\u2019Ivoire",
    "a thumbs up emoji: +1, good", "a five-thirty emoji: 5:30, clock", "A Canadian 1 cent piece ($.01).",
    "an exclamation question mark emoji: !, !?, ?", "a man's red-and-white kite, flying at 3.5 m!",
    "Don\u2019t \u201cstop\u201d \u2014 now\u2026", "a [big] {box} 50% off, e.g. a/b",
])
def test_captions_written_from_tokens_read_as_the_original_by_the_coco_evaluation(caption):
    from vislang.metrics.ptb_tokenizer import tokenize_captions

    assert tokenize_captions([" ".join(tokenize(caption))]) == tokenize_captions([caption])


def test_punctuation_alone_has_no_words():
    from vislang.data.text import has_words

    assert tokenize("wow!! really?!") == ["wow", "!!", "really", "?!"]  # kept, as the PTB tokenizer keeps them
    assert not has_words("?!") and not has_words(" ... ") and has_words("!! wow") and has_words("😀")


def test_version_1_vocabularies_split_as_they_were_built(tmp_path):
    (tmp_path / "v.json").write_text(json.dumps({"format": "vislang-vocab", "version": 1,
                                                 "itos": ["<pad>", "<bos>", "<eos>", "<unk>", "don't", "keycap"]}))
    old = Vocabulary.load(tmp_path / "v.json")
    assert old.tokenizer == 1 and old.tokenize("Don\u2019t keycap: #") == ["don't", "keycap"]
    assert old.encode("Don\u2019t keycap: #", add_special=False) == [4, 5]
    old.save(tmp_path / "w.json")
    assert Vocabulary.load(tmp_path / "w.json").tokenizer == 1
    new = Vocabulary.build(["keycap: #"])
    assert new.tokenizer == 2 and new.itos[4:] == ["#", "keycap"]
    (tmp_path / "x.json").write_text(json.dumps({"format": "vislang-vocab", "tokenizer": 7,
                                                 "itos": ["<pad>", "<bos>", "<eos>", "<unk>"]}))
    with pytest.raises(DataError, match="field 'tokenizer': tokenizer version 7"):
        Vocabulary.load(tmp_path / "x.json")


def test_vocabulary_build_min_freq_and_order():
    v = Vocabulary.build(["a cat", "a dog", "a cat sits", "zebra"], min_freq=2)
    assert v.itos == ["<pad>", "<bos>", "<eos>", "<unk>", "a", "cat"]
    assert (v.pad_id, v.bos_id, v.eos_id, v.unk_id) == (0, 1, 2, 3)
    assert v.encode("a dog") == [1, 4, 3, 2]
    assert v.encode("a dog", add_special=False) == [4, 3]
    assert Vocabulary.build(["b b a a c"], max_size=2).itos[4:] == ["a", "b"]
    assert isinstance(v, TextTokenizer)


def test_encode_truncates_keeping_eos_and_decode_stops_at_eos():
    v = Vocabulary.build(["one two three four five"])
    ids = v.encode("one two three four five", max_len=4)
    assert len(ids) == 4 and ids[0] == v.bos_id and ids[-1] == v.eos_id
    assert v.decode(ids) == "one two"
    assert v.decode([v.bos_id, v.stoi["three"], v.eos_id, v.stoi["four"], v.pad_id]) == "three"


def test_vocabulary_save_load_roundtrip(tmp_path):
    v = Vocabulary.build(["the quick brown fox", "the lazy dog"])
    v.save(tmp_path / "vocab.json")
    w = Vocabulary.load(tmp_path / "vocab.json")
    assert w.itos == v.itos and w.encode("the fox") == v.encode("the fox")
    assert isinstance(load_tokenizer(tmp_path / "vocab.json"), Vocabulary)


@pytest.mark.parametrize("content, message", [
    ('{"itos": []}', "not a vislang vocabulary file"),
    ('{"format": "vislang-vocab", "itos": ["a"]}', "field 'itos': must be a list of distinct strings"),
    ('{"format": "vislang-vocab", "itos": ["<pad>", "<bos>", "<eos>", "<unk>", "a", "a"]}', "distinct"),
    ('{"format": "vislang-vocab", "itos": "abc"}', "field 'itos'"),
    ('{"format": ', "invalid JSON"),
])
def test_vocabulary_load_errors(tmp_path, content, message):
    (tmp_path / "v.json").write_text(content)
    with pytest.raises(DataError, match=message):
        Vocabulary.load(tmp_path / "v.json")


def _hf_wordlevel(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "a": 4, "red": 5, "square": 6}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]"])
    path = tmp_path / "hf" / "tokenizer.json"
    path.parent.mkdir()
    tok.save(str(path))
    return path


def test_hf_tokenizer_file(tmp_path):
    path = _hf_wordlevel(tmp_path)
    for t in (HFTokenizer(path), HFTokenizer(path.parent), load_tokenizer(path)):
        assert isinstance(t, HFTokenizer) and len(t) == 7
        assert (t.pad_id, t.bos_id, t.eos_id) == (0, 2, 3)
        ids = t.encode("a red circle")
        assert ids == [2, 4, 5, 1, 3]
        assert t.decode(ids) == "a red"
        assert t.encode("a red square", max_len=3) == [2, 4, 3]


def test_hf_tokenizer_errors(tmp_path):
    with pytest.raises(DataError, match="tokenizer file not found"):
        HFTokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text(json.dumps({"nope": 1}))
    with pytest.raises(DataError, match="not a Hugging Face tokenizer file"):
        HFTokenizer(tmp_path / "tokenizer.json")
