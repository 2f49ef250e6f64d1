"""The pure-Python PTB tokenizer against pycocoevalcap's PTBTokenizer (the Stanford CoreNLP 3.4.1 jar)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vislang.metrics.ptb_tokenizer import PTBTokenizer, ptb_tokenize_lines, tokenize_captions

# What the jar (through pycocoevalcap, punctuation removed) gives for captions on their own.
DOCUMENTED = [
    ("A man don't like it.", "a man do n't like it"),
    ("It's a dog's life, isn't it?", "it 's a dog 's life is n't it"),
    ("The dog cannot swim; it's gonna sink.", "the dog can not swim it 's gon na sink"),
    ("A well-known three-year-old child.", "a well-known three-year-old child"),
    ("\"Hello,\" he said, 'hi'.", "hello he said hi"),
    ("3.5 million $3.50 1,000 10:30 3/4 ½", "3.5 million $ 3.50 1,000 10:30 3/4 1/2"),
    ("Wait... what?! -- yes - no", "wait what ?! yes no"),
    ("Visit http://www.example.com/a?b=c and www.google.com now.",
     "visit http://www.example.com/a?b=c and www.google.com now"),
    ("Café naïve résumé Straße ÉCOLE", "café naïve résumé straße école"),
    ("I ❤ pizza 😀 🍕!", "i ❤ pizza"),
    ("", ""),
    ("   ", ""),
    ("(brackets) [square] {curly} <angle>", "-lrb- brackets -rrb- -lsb- square -rsb- -lcb- curly -rcb- <angle>"),
    ("Mr. Smith and Dr. Who vs. Ms. X etc.", "mr. smith and dr. who vs. ms. x etc."),
    ("e-mail a.b.c A.B. a.m. p.m.", "e-mail a.b.c a.b. a.m. p.m."),
    ("you'd he'll we're they've I'm 'tis o'clock rock'n'roll",
     "you 'd he 'll we 're they 've i 'm 't is o'clock rock 'n' roll"),
    ("The U.S. army", "the u.s. army"),
    ("O’Neil’s “quoted” text…", "o’neil 's quoted text"),
]


@pytest.mark.parametrize(("caption", "expected"), DOCUMENTED)
def test_documented_behaviour(caption: str, expected: str) -> None:
    assert tokenize_captions([caption]) == [expected]


def test_next_caption_decides_sentence_end() -> None:
    # "co." followed by a capitalised caption (or the end) also yields a "." token; a lower-case one not.
    assert ptb_tokenize_lines(["the co.", "the end"]) == ["the co.", "the end"]
    assert ptb_tokenize_lines(["the co.", "The end"]) == ["the co. .", "the end"]
    assert ptb_tokenize_lines(["the co."]) == ["the co. ."]
    assert ptb_tokenize_lines(["plan A.", "He left"]) == ["plan a .", "he left"]


def test_lower_casing_that_changes_lengths() -> None:
    # "İ" lower-cases to two characters; later captions must still be tokenised on their own text.
    assert tokenize_captions(["İstanbul", "We Cannot go, a.m."]) == ["i̇stanbul", "we can not go a.m."]


def test_sgml_tag_can_span_captions() -> None:
    # The jar reads an SGML tag whose quoted attribute runs into the next caption as one token.
    assert ptb_tokenize_lines(["x <a b='y", "z'> w"]) == ["x <a\u00a0b='y", "z'> w"]


def test_pycocoevalcap_interface() -> None:
    out = PTBTokenizer().tokenize({"a": [{"caption": "A dog."}, {"caption": "Two cats!"}], 7: ["It's me"]})
    assert out == {"a": ["a dog", "two cats"], 7: ["it 's me"]}


def test_empty_input() -> None:
    assert tokenize_captions([]) == []
    assert PTBTokenizer().tokenize({}) == {}


def test_documented_behaviour_matches_jar(jar_tokenize) -> None:
    captions = [c for c, _ in DOCUMENTED]
    # Each on its own, as in the parametrised test (a following caption can change the last token).
    assert [jar_tokenize([c])[0] for c in captions[:3]] == [e for _, e in DOCUMENTED[:3]]
    assert jar_tokenize(captions) == tokenize_captions(captions)


def test_real_corpus_matches_jar(jar_tokenize, real_references, real_candidates) -> None:
    references = [c for refs in real_references.values() for c in refs]
    candidates = list(real_candidates.values())
    assert tokenize_captions(references) == jar_tokenize(references)
    assert tokenize_captions(candidates) == jar_tokenize(candidates)


# ---------------------------------------------------------------------------------------------------
# Property-based comparison. The alphabet is every printable ASCII character plus non-ASCII letters,
# symbols, quotes, dashes, spaces and emoji; the pieces add words the lexer treats specially. Excluded,
# as documented in vislang.metrics.ptb_tokenizer: line separators other than "\n" inside a caption (the
# jar emits extra lines for them) and Greek capital sigma (Java's final-sigma lower-casing differs).

ALPHABET = ([chr(c) for c in range(32, 127)] + list("\t\u00a0éüñçøßàÉÜΩωжд中文❤★☺‘’“”«»–—…½¢£€°²·")
            + ["\U0001f600", "\U0001f355", "\U0001f44d", "\U0001f3fd"])
PIECES = ["U.S.", "a.m.", "e.g.", "etc.", "Co.", "Inc.", "Mr.", "vs.", "No.", "fig.", "don't", "can't", "it's",
          "they're", "I'm", "o'clock", "rock'n'roll", "'90s", "3.5", "1,000", "10:30", "1/2", "5 1/2", "555-1234",
          "(555) 123-4567", "$5", "well-known", "--", "...", ". . .", "http://x.com/a", "www.y.org", "me@x.com",
          "@bob", "#tag", ":)", "^_^", "<b>", "</b>", "&amp;", "AT&T", "c++", "cannot", "gonna", "'tis", "y'all",
          "He", "The", "It", "She", "In", "file.txt", "a", "the", "dog", "red", "A.", "I."]

captions = st.one_of(
    st.text(alphabet=st.sampled_from(ALPHABET), max_size=30),
    st.lists(st.one_of(st.sampled_from(PIECES), st.text(alphabet=st.sampled_from(ALPHABET), max_size=3)),
             max_size=8).map(" ".join),
)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(captions, min_size=1, max_size=120))
def test_random_documents_match_jar(jar_tokenize, documents: list[str]) -> None:
    assert tokenize_captions(documents) == jar_tokenize(documents)
