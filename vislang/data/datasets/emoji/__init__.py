"""The built-in ``emoji`` dataset: one concept drawn in several styles, with CLDR names as text.

Sources (npm packages, pinned in :data:`PACKAGES` so every build holds the same data):

* images: ``emoji-datasource-google`` (Noto Emoji, Apache-2.0) and ``emoji-datasource-twitter`` (Twemoji,
  CC-BY-4.0), the single 64 px PNGs under ``img/<vendor>/64/`` (not the sprite sheets); ``openmoji``
  (CC-BY-SA-4.0), the colour SVGs under ``color/svg/`` rasterised with resvg; ``@iconify-json/fluent-emoji-flat``
  (Microsoft Fluent Emoji, flat style, MIT; style ``fluent``) and ``@iconify-json/fluent-emoji-high-contrast``
  (its black line-art set without skin tones; ``fluent_line``), Iconify icon sets: ``icons.json`` holds each
  drawing's SVG body and ``chars.json`` maps code points to icon names (Fluent has no flags);
  ``@iconify-json/emojione`` (EmojiOne 2 / EmojiTwo, CC-BY-4.0; ``emojione``), ``@iconify-json/emojione-monotone``
  (its black line art, no skin tones; ``emojione_line``) and ``@iconify-json/noto-v1`` (Google's Noto Emoji
  before 2017, Apache-2.0; ``noto_v1``), Iconify sets whose ``chars.json`` is empty: their icon names are
  matched to the CLDR labels (``waving-hand-light-skin-tone``); names from older CLDR releases match nothing
  and are counted;
* text: ``emojibase-data`` (MIT; CLDR annotations under the Unicode licence): English label, tags, group,
  subgroup, skin tone and gender.

``prepare`` installs the packages the chosen styles need with npm into ``<data root>/_npm/emoji`` the first
time (about 250 MB). Without npm, install Node.js (which brings npm), or set ``VISLANG_EMOJI_NPM_DIR`` to a
``node_modules`` folder that already holds them.

Concepts
    A *concept* is one emojibase entry or one of its skin-tone variants, named by its code point sequence
    without U+FE0F (upper-case hex joined by ``-``, e.g. ``1F44B-1F3FB``). Vendor file names keep FE0F in
    some places and drop it in others, so both sides are compared with FE0F removed. Left out, because they
    are not pictures of anything: the 26 regional indicator letters (no emojibase group) and the group 2
    "component" entries (skin-tone swatches and hair components). Every entry left out and every image
    without a concept is counted in a line on stderr.

Records
    One record per (style, concept) image, id ``<style>/<concept>``, image ``images/<style>/<concept>.png``
    (RGB, ``size`` x ``size``, alpha composited onto ``background``). Captions are the CLDR label and a
    sentence made from it and the tags: ``"grinning face"`` and ``"a grinning face emoji: cheerful, cheery,
    face, ..."``; a qualifier after the label's colon goes in brackets (``"a waving hand emoji (light skin
    tone): bye, ..."``); skin-tone variants use their base emoji's tags. The record label is the emojibase
    group name (``"smileys-emotion"``, ...) for classification. Meta: ``vendor``, ``concept``, ``base`` (the
    split group key below), ``group``, ``subgroup``, ``emoji`` (the character), ``tags``, and where emojibase
    has them ``skin_tone`` (1-5, or a list of two for two-person emoji with different tones) and ``gender``
    (``"female"``/``"male"``).

Splits
    Concepts are grouped by :func:`base_key`: skin-tone modifiers, ZWJ + gender sign (U+2640/U+2642) and
    ZWJ + right arrow (the "facing right" variants) are removed, the gendered people man/woman, boy/girl and
    old man/old woman become person, child and older person, and the few gendered or multi-person emoji
    that have a separate neutral code point (Santa Claus and Mrs. Claus -> Mx Claus, kiss, couple with
    heart, holding hands, ...) map to it (:data:`SAME_AS`). So "waving hand" and its five tones share a group,
    as do "person: beard", "man: beard" and "woman: beard" in every tone. Each flag is its own group.

    Each group goes wholly to train, val or test by a hash of ``seed`` and the group key (fractions
    ``val_fraction`` and ``test_fraction``; the same on every machine). The split files are:

    * ``train``: the ``vendors`` styles' images of train concepts;
    * ``val``: the ``vendors`` styles' images of val concepts;
    * ``test_seen_concepts_new_style``: the ``heldout`` styles' images of train concepts;
    * ``test_new_concepts``: every style's images (vendors and held out) of test concepts;
    * ``val_new_style``: the ``val_style`` styles' images of train concepts (empty without ``val_style``): a
      drawing style never trained on, to choose recipes and checkpoints on without looking at a test split.

    Held-out styles (OpenMoji by default) therefore appear only in test splits; their images of val
    concepts are not used. ``train_only`` styles (none by default; the Fluent, EmojiOne and Noto v1 sets are
    meant for it) add their images of train concepts to ``train`` and nothing else, so more training styles
    leave the val and test splits exactly as they are. A ``val_style`` style (e.g. ``emoji:train_only=fluent+
    fluent_line+emojione+emojione_line,val_style=noto_v1``) is in no other split.

Modules: :mod:`~.concepts` (ids, split groups, captions), :mod:`~.emojibase` (the CLDR text), :mod:`~.styles`
(image sources), :mod:`~.iconify` (Iconify icon sets), :mod:`~.npm` (package install and pins),
:mod:`~.render` (PNG output), :mod:`~.report` (stderr counts), :mod:`~.build` (options, splits, registration)
and :mod:`~.questions` (VQA questions from the metadata).
"""

from vislang.data.datasets.emoji.build import (
    LICENSE,
    SPLITS,
    EmojiOptions,
    build_emoji,
    check_options,
    prepare,
)
from vislang.data.datasets.emoji.concepts import (
    SAME_AS,
    Concept,
    assign_split,
    base_key,
    caption_sentence,
    concept_id,
)
from vislang.data.datasets.emoji.emojibase import EmojibaseText, read_emojibase
from vislang.data.datasets.emoji.iconify import iconify_icon_svg, iconify_svgs, label_names, label_slug
from vislang.data.datasets.emoji.npm import NPM_DIR_ENV, PACKAGES, ensure_packages, npm_prefix, packages_for
from vislang.data.datasets.emoji.questions import SKIN_TONE_NAMES, metadata_questions
from vislang.data.datasets.emoji.render import RenderJob, render_all, render_image
from vislang.data.datasets.emoji.styles import STYLES, Style, style_images

__all__ = [
    "Concept",
    "EmojiOptions",
    "EmojibaseText",
    "LICENSE",
    "NPM_DIR_ENV",
    "PACKAGES",
    "RenderJob",
    "SAME_AS",
    "SKIN_TONE_NAMES",
    "SPLITS",
    "STYLES",
    "Style",
    "assign_split",
    "base_key",
    "build_emoji",
    "caption_sentence",
    "check_options",
    "concept_id",
    "ensure_packages",
    "iconify_icon_svg",
    "iconify_svgs",
    "label_names",
    "label_slug",
    "metadata_questions",
    "npm_prefix",
    "packages_for",
    "prepare",
    "read_emojibase",
    "render_all",
    "render_image",
    "style_images",
]
