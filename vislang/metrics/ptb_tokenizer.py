"""PTB tokenisation exactly as pycocoevalcap's ``PTBTokenizer`` produces it, in pure Python (no Java).

pycocoevalcap joins every caption of a set into one document (one caption per line, newlines inside a
caption replaced by spaces), runs ``stanford-corenlp-3.4.1.jar``'s ``PTBTokenizer -preserveLines
-lowerCase`` on it and drops the tokens of its ``PUNCTUATIONS`` list. This module reimplements that
lexer's observable behaviour: a longest-match scanner over the same kinds of rules (words, numbers,
contractions, abbreviations, acronyms, URLs, quotes, dashes, ellipses, brackets, smileys, ...), each
rule written here from the behaviour measured on the jar (``tests/metrics`` compares the two).

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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vislang.metrics import _ptb_tables as tables

try:  # the regular-expression parser, to find which characters each rule can start with
    from re import _parser as _sre  # Python >= 3.11
except ImportError:  # pragma: no cover - Python 3.10
    import sre_parse as _sre  # type: ignore[no-redef]

# Tokens pycocoevalcap removes after tokenisation (compared before nothing else: the jar lower-cases
# its output, so "-LRB-" and friends never match and survive as "-lrb-").
PUNCTUATIONS = frozenset(["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-",
                          ".", "?", "!", ",", ":", "-", "--", "...", ";"])

# ---------------------------------------------------------------------------------------------------
# Character classes and building blocks (Python regular-expression syntax).

LETTER = f"[A-Za-z{tables.LETTERS}]"
DIGIT = f"[0-9{tables.DIGITS}]"
SPLET = r"&[aeiouAEIOU](?i:acute|grave|uml);"
WORD_LETTER = f"(?:[A-Za-z{tables.LETTERS}{tables.WORD_EXTRAS}]|{SPLET})"
SPACE = "[ \t\u00a0\u2000-\u200a\u3000]"
NEWLINE = "(?:\r\n|[\r\n\u2028\u2029\u000b\u000c\u0085])"
SPACENL = f"(?:{SPACE}|{NEWLINE})"
APOS = "(?:['\u0092\u2019]|(?i:&apos;))"
APOS_ETC = "(?:['`\u0092\u2019\u0091\u2018\u201b]|(?i:&apos;))"
SGML_NAME = r"[A-Za-z][A-Za-z0-9_:.\-]*"
SGML = (r"<(?:[!?][A-Za-z\-][^>\r\n]*|" + SGML_NAME + r"(?: +" + SGML_NAME
        + r"""(?: *= *(?:'[^']*'|"[^"]*"))?)* *\/?|\/""" + SGML_NAME + r") *>")  # quoted values may span lines
WORD = f"{WORD_LETTER}(?:{WORD_LETTER}|{DIGIT})*(?:[.!?]{WORD_LETTER}(?:{WORD_LETTER}|{DIGIT})*)*"
NUM = f"(?:{DIGIT}*(?:[.:,\u00ad\u066b\u066c]{DIGIT}+)+|{DIGIT}+)"
ACRO = r"(?:[A-Za-z](?:\.[A-Za-z])*|(?i:Canada|Sino|Korean|EU|Japan|non)-(?i:U\.S)|(?i:U\.S\.-(?:U\.K|U\.S\.S\.R)))"
HYPHEN = "[-_\u058a\u2010\u2011]"


def _caseless(pattern: str) -> str:
    """Make the letters of a pattern match either case, except inside [character classes].

    This is how the jar's lexer treats its rules: literals are caseless, character classes are not.
    """
    out, in_class, escaped = [], False, False
    for ch in pattern:
        if escaped:
            out.append(ch)
            escaped = False
        elif ch == "\\":
            out.append(ch)
            escaped = True
        elif ch == "[":
            in_class = True
            out.append(ch)
        elif ch == "]":
            in_class = False
            out.append(ch)
        elif not in_class and ch.isascii() and ch.isalpha():
            out.append(f"[{ch.lower()}{ch.upper()}]")
        else:
            out.append(ch)
    return "".join(out)


ABMONTH = "Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept?|Oct|Nov|Dec"
ABDAYS = "Mon|Tues?|Wed|Thu(?:rs)?|Fri"
ABSTATE = ("Ala|Ariz|[A]z|[A]rk|Calif|Colo|Conn|Ct|Dak|[D]el|Fla|Ga|[I]ll|Ind|Kans?|Ky|[L]a|[M]ass|Md|Mich|Minn|"
           "[M]iss|Mo|Mont|Neb|Nev|Okla|[O]re|[P]a|Penn|Tenn|[T]ex|Va|Vt|[W]ash|Wisc?|Wyo")
ABCOMP = "Inc|Cos?|Corp|Pp?t[ye]s?|Ltd|Plc|Rt|Bancorp|Bhd|Assn|Univ|Intl|Sys"
ABNUM = "tel|est|ext|sq"
ABPTIT = r"Jr|Sr|Bros|(?:Ed|Ph)\.D|Blvd|Rd|Esq"
ABTITLE = ("Mr|Mrs|Ms|[M]iss|Drs?|Profs?|Sens?|Reps?|Attys?|Lt|Col|Gen|Messrs|Govs?|Adm|Rev|Maj|Sgt|Cpl|Pvt|"
           "Capt|Ste?|Ave|Pres|Lieut|Rt|Hon|Brig|Co?mdr|Pfc|Spc|Supts?|Det|Mt|Ft|Adj|Adv|Asst|Assoc|Ens|Insp|Mlle|"
           "Mme|Msgr|Sfc|Sr")
ABCOMP2 = "Invt|Elec|Natl|M[ft]g|Dept|Blvd|Rd|Ave"
ABBREV1 = _caseless(f"(?:{ABMONTH}|{ABDAYS}|{ABSTATE}|{ABCOMP}|{ABNUM}|{ABPTIT}|etc|al|seq|Bldg)\\.")
ABBREV4 = _caseless(f"(?:{ABTITLE}|vs|[v]|Alex|Wm|Jos|Cie|a\\.k\\.a|cf|TREAS|Ph|{ABCOMP2})") + f"|{ACRO}"
ABBREV2 = f"(?:{ABBREV4})\\."
ABBREV3 = _caseless(r"(?:ca|figs?|prop|nos?|art|bldg|pp|op)\.")
ACRONYM = ACRO + r"\."
# Words after which an acronym's period also ends the sentence; their first letter must be a capital.
_STARTERS = ("About", "According", "Additionally", "After", "An", "A", "As", "At", "But", "Did", "During", "Earlier",
             "He", "Her", "Here", "However", "How", "If", "In", "It", "Last", "Many", "More", "Mr\\.", "Ms\\.",
             "Now", "Once", "One", "Other", "Our", "She", "Since", "So", "Some", "Such", "That", "The", "Their",
             "Then", "There", "These", "They", "This", "We", "When", "While", "What", "Who", "Why", "Yet", "You")
SENTENCE_STARTERS = _caseless("|".join(f"[{w[0]}]{w[1:]}" for w in _STARTERS))
SENTEND = f"{SPACENL}(?:{SPACENL}|[A-Z{tables.UPPERCASE}]|{SGML})"


# ---------------------------------------------------------------------------------------------------
# Rule actions. Each takes the matched token text and returns (token or None, characters to push back).

Action = Callable[[str], "tuple[str | None, int]"]


def _keep(text: str) -> tuple[str | None, int]:
    return text, 0


def _skip(text: str) -> tuple[str | None, int]:
    return None, 0


def _const(token: str) -> Action:
    return lambda text: (token, 0)


def _push(n: int) -> Action:
    return lambda text: (text[: len(text) - n], n)


def _reduplicate_period(text: str) -> tuple[str | None, int]:
    """Keep the abbreviation with its period and also return the period as the next token."""
    return text, 1


def _acronym_sentence_end(text: str) -> tuple[str | None, int]:
    """A one-letter acronym ("A.") gives up its period; longer ones keep it and repeat it."""
    if len(text) == 2:
        return text[0], 1
    return text, 1


_LEFT_SINGLE = re.compile("[\u0091\u2018\u201b\u2039]")
_RIGHT_SINGLE = re.compile("[\u0092\u2019\u203a]")
_LEFT_DOUBLE = re.compile("[\u0093\u201c\u00ab]")
_RIGHT_DOUBLE = re.compile("[\u0094\u201d\u00bb]")
_ASCII_SINGLE = re.compile("(?i:&apos;)|'")
_ASCII_DOUBLE = re.compile('"|(?i:&quot;)')


def _latex_quotes(text: str, probably_left: bool) -> str:
    """Map quote characters to the LaTeX/PTB forms ` `` ' ''."""
    if probably_left:
        text = _ASCII_DOUBLE.sub("``", _ASCII_SINGLE.sub("`", text))
    else:
        text = _ASCII_DOUBLE.sub("''", _ASCII_SINGLE.sub("'", text))
    text = _LEFT_SINGLE.sub("`", text)
    text = _RIGHT_SINGLE.sub("'", text)
    text = _LEFT_DOUBLE.sub("``", text)
    return _RIGHT_DOUBLE.sub("''", text)


def _left_quote(text: str) -> tuple[str | None, int]:
    return _latex_quotes(text, True), 0


def _right_quote(text: str) -> tuple[str | None, int]:
    return _latex_quotes(text, False), 0


def _without_soft_hyphens(text: str) -> tuple[str | None, int]:
    return text.replace("\u00ad", ""), 0


def _amp(text: str) -> tuple[str | None, int]:
    return re.sub("(?i:&amp;)", "&", text), 0


def _nbsp(text: str) -> tuple[str | None, int]:
    return text.replace(" ", "\u00a0"), 0


def _phone(text: str) -> tuple[str | None, int]:
    return text.replace(" ", "\u00a0").replace("(", "-LRB-").replace(")", "-RRB-"), 0


def _parens(text: str) -> tuple[str | None, int]:
    return text.replace("(", "-LRB-").replace(")", "-RRB-"), 0


def _hyphens(text: str) -> tuple[str | None, int]:
    return ("--" if 3 <= len(text) <= 4 else text), 0


_CURRENCY = {"\u00a2": "cents", "\u00a3": "#", "\u0080": "$", "\u00a4": "$", "\u20a0": "$", "\u20ac": "$"}
_FRACTIONS = {"\u00bc": "1/4", "\u00bd": "1/2", "\u00be": "3/4", "\u2153": "1/3", "\u2154": "2/3"}


def _currency(text: str) -> tuple[str | None, int]:
    return _CURRENCY.get(text, text), 0


def _fraction(text: str) -> tuple[str | None, int]:
    return _FRACTIONS.get(text, text), 0


# ---------------------------------------------------------------------------------------------------
# The rules, in the lexer's priority order (earlier wins a tie in length).


@dataclass(frozen=True)
class Rule:
    """One lexer rule: alternatives matched at a position, the longest wins.

    Each alternative is a compiled pattern whose group 1 is the token; anything matched after group 1 is
    trailing context: it counts for the longest-match choice but is not consumed.
    """

    name: str
    patterns: tuple[re.Pattern, ...]
    action: Action


def _rule(name: str, token: str | Sequence[str], action: Action = _keep, context: str = "") -> Rule:
    alternatives = [token] if isinstance(token, str) else list(token)
    return Rule(name, tuple(re.compile(f"({alt}){context}") for alt in alternatives), action)


SWORD = "[A-Za-z\u00ad]*[A-MO-Za-mo-z]\u00ad*"
SREDAUX = f"[nN]{APOS_ETC}[tT]"
REDAUX = f"{APOS}(?:[msdMSD]|(?i:re|ve|ll))"
APOWORD = [
    f"{APOS}[nN]{APOS}?",
    f"[lLdDjJ]{APOS}",
    f"(?i:Dunkin|somethin|ol){APOS}",
    f"{APOS}(?i:em)",
    f"[A-HJ-XZn]{APOS_ETC}{LETTER}{{2}}{LETTER}*",
    f"{APOS}[2-9]0[sS]",
    f"{APOS}(?i:till|til)",
    f"{LETTER}+[aeiouyAEIOUY]{APOS_ETC}[aeiouA-Z]{LETTER}*",
    f"{APOS}(?i:cause)",
    r"(?i:cont'd)\.?",
    "(?i:nor'easter|c'mon|e'er|s'mores|ev'ry|li'l|nat'l)",
    f"[oO]{APOS_ETC}[oO]",
]
FULLURL = r"(?i:https?):\/\/[^ \t\n\f\r\"<>|(){}]+[^ \t\n\f\r\"<>|.!?(){},-]"
LIKELYURL = (r"(?:(?i:www)\.(?:[^ \t\n\f\r\"<>|.!?(){},]+\.)+[a-zA-Z]{2,4}|(?:[^ \t\n\f\r\"`'<>|.!?(){},-_$]+\.)+"
             r"(?i:com|net|org|edu))(?:\/[^ \t\n\f\r\"<>|()]+[^ \t\n\f\r\"<>|.!?(){},-])?")
EMAIL = (r"(?:(?i:&lt;)|<)?[a-zA-Z0-9][^ \t\n\f\r\"<>|(){}\u00a0]*@(?:[^ \t\n\f\r\"<>|(){}.\u00a0]+\.)*"
         r"[^ \t\n\f\r\"<>|(){}.\u00a0]+(?:(?i:&gt;)|>)?")
TWITTER = f"@[a-zA-Z_][a-zA-Z_0-9]*|#{WORD_LETTER}+"
FILENAME = (f"(?:{LETTER}|{DIGIT})+(?:\\.(?:{LETTER}|{DIGIT})+)*\\." + _caseless(
    "(?:bat|bmp|c|class|cgi|cpp|dll|docx?|exe|gif|gz|h|html?|jar|java|jpeg|jpg|mov|mp3|pdf|php|pl|png|ppt|ps|py|sql|"
    "tar|txt|wav|x|xml|zip)"))
DATE = f"{DIGIT}{{1,2}}[-/]{DIGIT}{{1,2}}[-/]{DIGIT}{{2,4}}"
NUMBER = f"[-+]?{NUM}"
SUBSUPNUM = "[\u207a\u207b\u208a\u208b]?(?:[\u2070\u00b9\u00b2\u00b3\u2074-\u2079]+|[\u2080-\u2089]+)"
FRAC = f"(?:{DIGIT}{{1,4}}[- \u00a0])?{DIGIT}{{1,4}}(?:\\\\?\\/|\u2044){DIGIT}{{1,4}}"
FRAC2 = "[\u00bc\u00bd\u00be\u2153-\u215e]"
TBSPEC = (r"-(?i:RRB|LRB|RCB|LCB|RSB|LSB)-|(?i:C\.D\.s)|(?i:pro|anti)-|(?i:S)(?:&|(?i:&amp;))(?i:P-500)|"
          f"(?i:S)(?:&|(?i:&amp;))(?i:Ls)|(?i:Cap){APOS}[nN]|[cC]{APOS}(?i:est)")
THING3 = "[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}(?:\\\\?\\/[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}){1,2}"
DOLSIGN = r"[A-Z]*\$|#"
DOLSIGN2 = "[\u00a2\u00a3\u00a4\u00a5\u0080\u20a0\u20ac\u060b\u0e3f\u20a4\uffe0\uffe1\uffe5\uffe6]"
PHONE = (r"(?:\([0-9]{2,3}\)[ \u00a0]?|(?:\+\+?)?(?:[0-9]{2,4}[- \u00a0])?[0-9]{2,4}[- \u00a0])[0-9]{3,4}"
         r"[- \u00a0]?[0-9]{3,5}|(?:(?:\+\+?)?[0-9]{2,4}\.)?[0-9]{2,4}\.[0-9]{3,4}\.[0-9]{3,5}")
LDOTS = "\\.{3,5}|(?:\\.[ \u00a0]){2,4}\\.|[\u0085\u2026]"
QUOTES = [APOS, "''", "[`\u2018\u2019\u201a\u201b\u201c\u201d\u0091\u0092\u0093\u0094\u201e\u201f\u2039\u203a\u00ab\u00bb]{1,2}"]
ACRO2 = r"[A-Za-z](?:\.[A-Za-z])+"
HTHING = f"[A-Za-z0-9][A-Za-z0-9.,\u00ad]*(?:-(?:{ACRO2}\\.|[A-Za-z0-9\u00ad]+))+"
THING_PART = f"(?:[dDoOlL]{APOS_ETC}(?:{LETTER}|{DIGIT}))?(?:{LETTER}|{DIGIT})+"
THING = f"{THING_PART}(?:{HYPHEN}{THING_PART})*"
THINGA = r"[A-Z]+(?:(?:[+&]|(?i:&amp;))[A-Z]+)+"
SMILEY = r"[<>]?[:;=][\-o\*']?[\(\)DPdpO\\{@\|\[\]]"
ASIANSMILEY = (r"[\^x=~<>]\.\[\^x=~<>]|[\-\^x=~<>']_[\-\^x=~<>']|\([\-\^x=~<>'][_.]?[\-\^x=~<>']\)|"
               r"\([\^x=~<>']-[\^x=~<>'`]\)")
PROG_LANGS = r"(?i:c)\+\+|(?i:c|f)#"
MISCSYMBOL = f"[+%&~^|\\\\{tables.SYMBOLS}]"

RULES: tuple[Rule, ...] = (
    _rule("prog_langs", PROG_LANGS),
    _rule("assimilations3", "(?i:cannot|'twas)", _push(3)),
    _rule("assimilations2", "(?i:'tis|gonna|gotta|lemme|gimme|wanna)", _push(2)),
    _rule("sgml", SGML, _nbsp),
    _rule("spmdash", "(?i:&(?:MD|mdash|ndash);)|[\u0096\u0097\u2013\u2014\u2015]", _const("--")),
    _rule("spamp", "(?i:&amp;)", _amp),
    _rule("sppunc", "(?i:&(?:HT|TL|UR|LR|QC|QL|QR|odq|cdq|#[0-9]+);)"),
    _rule("word_redaux", WORD, _without_soft_hyphens, context=f"(?:{REDAUX})"),
    _rule("sword_sredaux", SWORD, _without_soft_hyphens, context=f"(?:{SREDAUX})"),
    _rule("word", WORD, _without_soft_hyphens),
    _rule("apoword", APOWORD),
    _rule("apoword2", f"[yY]{APOS}", context=f"(?:{LETTER})"),
    _rule("fullurl", FULLURL),
    _rule("likelyurl", LIKELYURL),
    _rule("email", EMAIL),
    _rule("twitter", TWITTER),
    _rule("redaux", REDAUX, _right_quote, context="(?:[^A-Za-z])"),
    _rule("sredaux", SREDAUX, _right_quote),
    _rule("date", DATE),
    _rule("number", NUMBER, _without_soft_hyphens),
    _rule("subsupnum", SUBSUPNUM),
    _rule("frac", FRAC, _nbsp),
    _rule("frac2", FRAC2, _fraction),
    _rule("tbspec", TBSPEC, _amp),
    _rule("thing3", THING3),
    _rule("dolsign", DOLSIGN),
    _rule("dolsign2", DOLSIGN2, _currency),
    _rule("acronym_sentence_end", ACRONYM, _acronym_sentence_end,
          context=f"(?:{SPACENL}+(?:{SENTENCE_STARTERS}|{SGML}){SPACENL})"),
    _rule("abbrev3", ABBREV3, context=f"(?:{SPACENL}?{DIGIT})"),
    _rule("abbrev1_sentence_end", ABBREV1, _reduplicate_period, context=f"(?:{SENTEND})"),
    _rule("abbrev1", ABBREV1, context=r"[\s\S][\s\S]"),
    _rule("abbrev1_at_end", ABBREV1, _reduplicate_period),
    _rule("abbrev2", ABBREV2),
    _rule("abbrev4", ABBREV4, context=f"(?:{SPACE})"),
    _rule("acro", ACRO, context=f"(?:{SPACENL})"),
    _rule("tbspec2", f"{APOS}[0-9][0-9]", context=f"(?:{SPACENL})"),
    _rule("filename", FILENAME, context=f"(?:{SPACENL}|[.?!,])"),
    _rule("word_period", WORD + r"\.", _without_soft_hyphens, context="(?:[,;:\u3001])"),
    _rule("phone", PHONE, _phone),
    _rule("dblquote_left", '"|(?i:&quot;)', _left_quote, context="(?:[A-Za-z0-9$])"),
    _rule("dblquote", '"|(?i:&quot;)', _right_quote),
    _rule("lessthan", "<|(?i:&lt;)", _const("<")),
    _rule("greaterthan", ">|(?i:&gt;)", _const(">")),
    _rule("smiley", SMILEY, _parens, context="[^A-Za-z0-9]"),
    _rule("asiansmiley", ASIANSMILEY, _parens),
    _rule("lcb", r"\{", _const("-LCB-")),
    _rule("rcb", r"\}", _const("-RCB-")),
    _rule("lsb", r"\[", _const("-LSB-")),
    _rule("rsb", r"\]", _const("-RSB-")),
    _rule("lrb", r"\(", _const("-LRB-")),
    _rule("rrb", r"\)", _const("-RRB-")),
    _rule("hyphens", "-+", _hyphens),
    _rule("ldots", LDOTS, _const("...")),
    _rule("fnmarks", "@+|#+|_+"),
    _rule("asts", r"\*+|(?:\\\*){1,3}"),
    _rule("insentp", "[,;:\u3001]"),
    _rule("bang", "[?!]+"),
    _rule("period", "[.\u00a1\u00bf\u037e\u0589\u061f\u06d4\u0700-\u0702\u07fa\u3002]"),
    _rule("equals", "="),
    _rule("slash", "/"),
    _rule("hthing_period", HTHING + r"\.", _without_soft_hyphens, context="(?:[,;:\u3001])"),
    _rule("hthing", HTHING, _without_soft_hyphens),
    _rule("thing_period", THING + r"\.", context="(?:[,;:\u3001])"),
    _rule("thing", THING),
    _rule("thinga_period", THINGA + r"\.", _amp, context="(?:[,;:\u3001])"),
    _rule("thinga", THINGA, _amp),
    _rule("quote_left", "'", _left_quote, context="(?:[A-Za-z][^ \t\n\r\u00a0])"),
    _rule("redaux2", REDAUX, _right_quote),
    _rule("quotes", QUOTES, _right_quote),
    _rule("fakeduckfeet", "<<|>>"),
    _rule("miscsymbol", MISCSYMBOL),
    _rule("space", f"\u0000|{SPACE}+|[\u200b\u200e\u200f\ufeff]", _skip),
    _rule("newline", NEWLINE, _skip),
    _rule("nbsp", "(?i:&nbsp;)", _skip),
    _rule("untokenizable", "[\\s\\S]", _skip),
)


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
