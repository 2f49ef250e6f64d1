"""The lexical rules of the pure-Python PTB tokenizer (:mod:`vislang.metrics.ptb_tokenizer`).

This module holds what the jar's lexer matches and what it does with each match, in three groups:

- character classes and building blocks (letters, digits, spaces, apostrophes, SGML tags, words,
  numbers, acronyms) and the pattern strings of abbreviations (months, states, titles, companies...)
  and of the capitalised words after which an acronym's period also ends a sentence;
- rule actions: functions that map a matched token's text to the token emitted (quotes to their PTB
  forms, brackets to ``-LRB-``..., currency and fraction symbols) and the characters pushed back;
- :data:`RULES`, every lexer rule in the jar's priority order, built from the above, and
  :data:`PUNCTUATIONS`, the tokens pycocoevalcap drops afterwards.

The scanner that applies the rules (longest match, earliest rule on a tie) and the public API live in
:mod:`vislang.metrics.ptb_tokenizer`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from vislang.metrics import _ptb_tables as tables

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
