"""The built-in ``emoji`` dataset, built once per session from the real npm packages into ``data_root``."""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vislang.data import load_dataset, prepare_dataset
from vislang.data.datasets import emoji
from vislang.errors import DataError, ExternalToolError

SPLITS = ("train", "val", "test_seen_concepts_new_style", "test_new_concepts", "val_new_style")
needs_npm = pytest.mark.network_data


def read_split(out: Path, split: str) -> list[dict]:
    """The manifest rows of one split, as written."""
    with open(out / f"{split}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def packages(data_root: Path) -> Path:
    """The real npm packages (installed into ``data_root/_npm`` on first use)."""
    return emoji.ensure_packages(data_root)


@pytest.fixture(scope="module")
def built(data_root: Path, packages: Path) -> Path:
    """The default emoji build."""
    return prepare_dataset("emoji", root=data_root)


@pytest.fixture(scope="module")
def rows(built: Path) -> dict[str, list[dict]]:
    return {split: read_split(built, split) for split in SPLITS if split != "val_new_style"}  # empty here


@pytest.fixture(scope="module")
def text(packages: Path) -> emoji.EmojibaseText:
    return emoji.read_emojibase(packages / "emojibase-data")


# --- pure functions ---------------------------------------------------------------------------------------


def test_concept_id_drops_fe0f_and_uppercases():
    assert emoji.concept_id("1f9d4-200d-2640-fe0f") == "1F9D4-200D-2640"
    assert emoji.concept_id("0023-FE0F-20E3") == "0023-20E3"
    assert emoji.concept_id("263A") == "263A"


def test_base_key_merges_tone_gender_and_direction():
    same = [
        ["1F44B", "1F44B-1F3FB", "1F44B-1F3FF"],  # waving hand and tones
        ["1F9D4", "1F9D4-200D-2642", "1F9D4-1F3FD-200D-2640", "1F9D4-1F3FB"],  # person / man / woman: beard
        ["1F9D1-200D-1F4BB", "1F468-200D-1F4BB", "1F469-1F3FE-200D-1F4BB"],  # technologist
        ["1F3C3", "1F3C3-200D-2640-200D-27A1", "1F3C3-1F3FC-200D-27A1"],  # person running (facing right)
        ["1F9D2", "1F466", "1F467-1F3FB"],  # child, boy, girl
        ["1F48F", "1F469-200D-2764-200D-1F48B-200D-1F468", "1F9D1-1F3FB-200D-2764-200D-1F48B-200D-1F9D1-1F3FC"],
        ["1F9D1-200D-1F91D-200D-1F9D1", "1F46B", "1F46D-1F3FB", "1F469-1F3FB-200D-1F91D-200D-1F468-1F3FC"],
        ["1F9D1-200D-1F384", "1F385-1F3FB", "1F936"],  # Mx Claus, Santa Claus, Mrs. Claus
    ]
    for keys in same:
        assert len({emoji.base_key(k) for k in keys}) == 1, keys
    different = ["1F1E9-1F1EA", "1F1EB-1F1F7", "1F3F3-200D-1F308", "2640", "2642", "1F44B", "1F9D4"]
    assert len({emoji.base_key(k) for k in different}) == len(different)


def test_caption_sentence():
    assert emoji.caption_sentence("grinning face", ["face", "grin", "happy"]) \
        == "a grinning face emoji: face, grin, happy"
    assert emoji.caption_sentence("man: beard", ["beard", "man"]) == "a man emoji (beard): beard, man"
    assert emoji.caption_sentence("unicorn", []) == "a unicorn emoji"
    assert emoji.caption_sentence("ogre", ["ogre"]).startswith("an ogre emoji")
    assert emoji.caption_sentence("NG button", ["ng"]).startswith("an NG button")
    assert emoji.caption_sentence("one o’clock", ["clock"]).startswith("a one o’clock")


def test_assign_split_is_deterministic_and_follows_fractions():
    keys = [f"K{i}" for i in range(4000)]
    first = [emoji.assign_split(k, 0, 0.1, 0.2) for k in keys]
    assert first == [emoji.assign_split(k, 0, 0.1, 0.2) for k in keys]
    counts = Counter(first)
    assert 0.08 < counts["val"] / len(keys) < 0.12 and 0.18 < counts["test"] / len(keys) < 0.22
    assert first != [emoji.assign_split(k, 1, 0.1, 0.2) for k in keys]  # the seed matters


# --- real emojibase data ------------------------------------------------------------------------------------


@needs_npm
def test_every_gendered_concept_shares_a_group_with_a_neutral_one(text):
    # Real data: each concept emojibase marks with a gender groups with an ungendered, untoned concept.
    neutral = {c.base for c in text.concepts.values() if c.gender is None and c.skin_tone is None}
    gendered = [c for c in text.concepts.values() if c.gender is not None]
    assert len(gendered) > 500
    assert [c.label for c in gendered if c.base not in neutral] == []
    by_label = {c.label: c for c in text.concepts.values()}
    for label in ("man: beard", "woman: beard", "person: beard", "person: dark skin tone, beard"):
        assert by_label[label].base == "1F9D4"
    assert by_label["man technologist"].base == by_label["technologist"].base
    assert by_label["boy"].base == by_label["girl"].base == by_label["child"].base


@needs_npm
def test_skipped_entries_are_regional_indicators_and_components(text):
    reasons = Counter(text.skipped.values())
    assert reasons == {"regional indicator": 26, "component": 9}
    assert "1F1E6" in text.skipped and "1F3FB" in text.skipped and "1F9B0" in text.skipped
    assert all(c.group != "component" for c in text.concepts.values())


# --- the built dataset ----------------------------------------------------------------------------------------


@needs_npm
def test_no_group_straddles_two_splits(rows):
    groups_in = {split: {r["base"] for r in rs} for split, rs in rows.items()}
    # test_seen_concepts_new_style draws on the train groups, so compare group splits, not file names.
    train = groups_in["train"] | groups_in["test_seen_concepts_new_style"]
    val, test = groups_in["val"], groups_in["test_new_concepts"]
    assert not train & val and not train & test and not val & test
    for split, rs in rows.items():
        want = {"train": "train", "val": "val", "test_seen_concepts_new_style": "train",
                "test_new_concepts": "test"}[split]
        assert {emoji.assign_split(r["base"], 0, 0.1, 0.1) for r in rs} == {want}
        assert all(emoji.base_key(r["concept"]) == r["base"] for r in rs)


@needs_npm
def test_openmoji_is_only_in_test_splits(rows):
    vendors = {split: Counter(r["vendor"] for r in rs) for split, rs in rows.items()}
    assert set(vendors["train"]) == set(vendors["val"]) == {"google", "twitter"}
    assert set(vendors["test_seen_concepts_new_style"]) == {"openmoji"}
    assert set(vendors["test_new_concepts"]) == {"google", "twitter", "openmoji"}


@needs_npm
def test_counts_are_plausible(rows, built):
    n = {split: len(rs) for split, rs in rows.items()}
    assert n["train"] > 4000 and n["val"] > 400
    assert n["test_seen_concepts_new_style"] > 2000 and n["test_new_concepts"] > 400
    assert sum(n.values()) > 10000
    summary = json.loads((built / "summary.json").read_text(encoding="utf-8"))
    assert {s["split"]: s["images"] for s in summary["splits"]} == {**n, "val_new_style": 0}
    ids = [r["id"] for rs in rows.values() for r in rs]
    assert len(ids) == len(set(ids))


@needs_npm
def test_records_have_captions_label_and_meta(rows, text):
    groups = {c.group for c in text.concepts.values()}
    for rs in rows.values():
        for r in rs:
            concept = text.concepts[r["concept"]]
            label, sentence = r["text"]
            assert label == concept.label and sentence.startswith(("a ", "an ")) and " emoji" in sentence
            assert r["label"] == r["group"] == concept.group and r["label"] in groups
            assert r["id"] == f"{r['vendor']}/{r['concept']}" and r["emoji"] == concept.emoji
            assert "FE0F" not in r["concept"]
            tone = r.get("skin_tone")
            assert tone is None or tone in range(1, 6) or (len(tone) == 2 and set(tone) <= set(range(1, 6)))
            assert r.get("gender") in (None, "female", "male")
    by_id = {r["id"]: r for rs in rows.values() for r in rs}
    wave = next(r for i, r in by_id.items() if i.endswith("/1F44B-1F3FD"))
    assert wave["skin_tone"] == 3 and "hello" in wave["tags"] and "medium skin tone" in wave["text"][1]
    beard = next(r for i, r in by_id.items() if i.endswith("/1F9D4-200D-2640"))
    assert beard["gender"] == "female" and beard["base"] == "1F9D4"


@needs_npm
def test_every_image_exists_and_is_rgb_64(rows, built):
    for rs in rows.values():
        for r in rs:
            path = built / r["image"]
            assert path.parent.name == r["vendor"] and path.stem == r["concept"]
            with Image.open(path) as im:
                assert (im.mode, im.size, im.format) == ("RGB", (64, 64), "PNG"), path
    # Alpha was composited onto white: the corners of a round face are background.
    for vendor in ("google", "twitter"):
        with Image.open(built / "images" / vendor / "1F600.png") as im:
            assert im.getpixel((0, 0)) == (255, 255, 255)
            assert im.getpixel((32, 32)) != (255, 255, 255)


@needs_npm
def test_second_prepare_is_fast_and_changes_nothing(built, data_root):
    before = {p.name: p.read_bytes() for p in sorted(built.glob("*.json*"))}
    image = built / "images" / "google" / "1F600.png"
    mtime = image.stat().st_mtime_ns
    start = time.perf_counter()
    assert prepare_dataset("emoji", root=data_root) == built
    assert time.perf_counter() - start < 2.0
    assert {p.name: p.read_bytes() for p in sorted(built.glob("*.json*"))} == before
    assert image.stat().st_mtime_ns == mtime


@needs_npm
def test_load_dataset_reads_the_records_back(built, data_root):
    ds = load_dataset("emoji", "test_new_concepts", root=data_root)
    assert ds.split == "test_new_concepts" and len(ds) == len(read_split(built, "test_new_concepts"))
    record = ds[0]
    assert Path(record.image).is_absolute() and Path(record.image).exists()
    assert len(record.captions) == 2 and record.label == record.meta["group"]
    assert {"vendor", "concept", "base", "subgroup", "emoji", "tags"} <= set(record.meta)


# --- errors and partial package sets -------------------------------------------------------------------------


def test_npm_absent_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv(emoji.NPM_DIR_ENV, raising=False)
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    with pytest.raises(ExternalToolError) as e:
        prepare_dataset("emoji", root=tmp_path)
    message = str(e.value)
    assert "npm is not on PATH" in message and "Node.js" in message and emoji.NPM_DIR_ENV in message
    assert "emojibase-data@17.0.0" in message
    assert not (tmp_path / "emoji" / "summary.json").exists()


@pytest.mark.skipif(shutil.which("npm") is None, reason="needs npm")
def test_failed_npm_install_is_reported(tmp_path, monkeypatch):
    # A real npm run against a registry address that refuses connections.
    monkeypatch.delenv(emoji.NPM_DIR_ENV, raising=False)
    monkeypatch.setenv("npm_config_registry", "http://127.0.0.1:9/")
    monkeypatch.setenv("npm_config_fetch_retries", "0")
    monkeypatch.setenv("npm_config_cache", str(tmp_path / "npm-cache"))
    with pytest.raises(ExternalToolError) as e:
        emoji.ensure_packages(tmp_path)
    assert "failed with exit status" in str(e.value) and "ECONNREFUSED" in str(e.value)
    assert emoji.NPM_DIR_ENV in str(e.value)
    assert not (emoji.npm_prefix(tmp_path) / "vislang-installed.json").exists()


def test_npm_dir_without_the_packages_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv(emoji.NPM_DIR_ENV, str(tmp_path / "node_modules"))
    with pytest.raises(ExternalToolError, match=r"VISLANG_EMOJI_NPM_DIR=.*lacks emojibase-data"):
        prepare_dataset("emoji", root=tmp_path)


@pytest.mark.parametrize("spec, needle", [
    ("emoji:vendors=google+apple", "unknown style 'apple'"),
    ("emoji:vendors=google,heldout=google", "both a training and a held-out style"),
    ("emoji:heldout=openmoji,val_fraction=0.6,test_fraction=0.5", "sum to less than 1"),
    ("emoji:background=notacolour", "unknown colour 'notacolour'"),
    ("emoji:train_only=apple", "option 'train_only': unknown style 'apple'"),
    ("emoji:train_only=openmoji", "style 'openmoji' is in both 'heldout' and 'train_only'"),
    ("emoji:train_only=fluent+google", "style 'google' is in both 'vendors' and 'train_only'"),
    ("emoji:val_style=apple", "option 'val_style': unknown style 'apple'"),
    ("emoji:train_only=fluent+noto_v1,val_style=noto_v1", "style 'noto_v1' is in both 'train_only' and 'val_style'"),
    ("emoji:val_style=openmoji", "style 'openmoji' is in both 'heldout' and 'val_style'"),
])
def test_bad_options_are_named(spec, needle, tmp_path):
    with pytest.raises(DataError, match=needle):
        prepare_dataset(spec, root=tmp_path)


SUBSET = ["1F600", "1F44B", "1F44B-1F3FB", "1F44B-1F3FC", "1F44B-1F3FD", "1F44B-1F3FE", "1F44B-1F3FF",
          "1F9D4", "1F9D4-200D-2642", "1F9D4-200D-2640", "1F1E9-1F1EA", "2764", "1F984", "0023-20E3"]
DROPPED_FROM_GOOGLE = "1F44B-1F3FD"


def make_subset(packages: Path, dest: Path) -> Path:
    """A node_modules with the real emojibase text and real images of a few concepts.

    Google lacks one concept's image, OpenMoji keeps one extra image that has no emojibase text.
    """
    for name in emoji.PACKAGES:
        (dest / name).mkdir(parents=True)
        shutil.copy(packages / name / "package.json", dest / name / "package.json")
    for sub in ("en/data.json", "meta/groups.json"):
        (dest / "emojibase-data" / sub).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(packages / "emojibase-data" / sub, dest / "emojibase-data" / sub)
    text = emoji.read_emojibase(packages / "emojibase-data")
    subset_names = {name for name, c in emoji.label_names({c: text.concepts[c].label for c in SUBSET}).items()}
    for style in emoji.STYLES.values():
        if style.iconify:  # the icon set cut down to the subset (Fluent has no flags: 1F1E9-1F1EA stays out)
            source = packages / style.package / style.folder
            icon_set = json.loads(source.read_text(encoding="utf-8"))
            chars = json.loads(source.with_name("chars.json").read_text(encoding="utf-8"))
            if style.by_label:  # named by label: keep the subset's names and one old CLDR name
                assert chars == {}
                kept = {}
                icon_set["icons"] = {n: b for n, b in icon_set["icons"].items()
                                     if n in subset_names or n == "bear-face"}
            else:
                kept = {k: v for k, v in chars.items() if emoji.concept_id(k) in SUBSET}
                icon_set["icons"] = {n: icon_set["icons"][n] for n in set(kept.values())
                                     if n in icon_set["icons"]}
            icon_set["aliases"] = {}
            (dest / style.package / style.folder).write_text(json.dumps(icon_set), encoding="utf-8")
            (dest / style.package / "chars.json").write_text(json.dumps(kept), encoding="utf-8")
            continue
        files = emoji.style_images(packages, style)
        wanted = [c for c in SUBSET if not (style.name == "google" and c == DROPPED_FROM_GOOGLE)]
        if style.name == "openmoji":
            wanted.append("E000")  # an OpenMoji extra, not a Unicode emoji
        folder = dest / style.package / style.folder
        folder.mkdir(parents=True)
        for concept in wanted:
            shutil.copy(files[concept], folder / files[concept].name)
    return dest


@pytest.fixture(scope="module")
def subset(packages: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_subset(packages, tmp_path_factory.mktemp("emoji-subset") / "node_modules")


@needs_npm
def test_missing_vendor_images_are_counted_not_hidden(subset, text, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(emoji.NPM_DIR_ENV, str(subset))
    out = prepare_dataset("emoji:test_fraction=0,val_fraction=0", root=tmp_path / "a")
    err = capsys.readouterr().err
    n = len(text.concepts)
    assert f"emoji: google: {len(SUBSET) - 1} images of {n} concepts; {n - len(SUBSET) + 1} concepts " \
           "without an image; 0 images without emojibase text" in err
    assert f"emoji: twitter: {len(SUBSET)} images of {n} concepts; {n - len(SUBSET)} concepts" in err
    assert "emoji: openmoji: " in err and "1 image without emojibase text (e.g. E000)" in err
    train = {r["id"] for r in read_split(out, "train")}
    assert f"twitter/{DROPPED_FROM_GOOGLE}" in train and f"google/{DROPPED_FROM_GOOGLE}" not in train
    assert len(train) == 2 * len(SUBSET) - 1
    seen = read_split(out, "test_seen_concepts_new_style")
    assert sorted(r["concept"] for r in seen) == sorted(SUBSET)
    assert not (out / "images" / "openmoji" / "E000.png").exists()


@needs_npm
def test_build_is_deterministic_and_honours_background(subset, tmp_path, monkeypatch):
    monkeypatch.setenv(emoji.NPM_DIR_ENV, str(subset))
    spec = "emoji:background=black,size=32,test_fraction=0.3,val_fraction=0.3,seed=7"
    a, b = prepare_dataset(spec, root=tmp_path / "a"), prepare_dataset(spec, root=tmp_path / "b")
    for split in SPLITS:
        assert (a / f"{split}.jsonl").read_bytes() == (b / f"{split}.jsonl").read_bytes()
    images = sorted((a / "images").rglob("*.png"))
    assert images and [p.read_bytes() for p in images] == \
        [(b / p.relative_to(a)).read_bytes() for p in images]
    with Image.open(a / "images" / "google" / "1F600.png") as im:
        assert im.size == (32, 32) and im.mode == "RGB" and im.getpixel((0, 0)) == (0, 0, 0)


@needs_npm
def test_missing_image_folder_and_bad_text_are_named(subset, tmp_path, monkeypatch):
    broken = shutil.copytree(subset, tmp_path / "node_modules")
    monkeypatch.setenv(emoji.NPM_DIR_ENV, str(broken))
    shutil.rmtree(broken / "emoji-datasource-twitter" / "img")
    with pytest.raises(DataError, match=r"img/twitter/64: image folder of style 'twitter' not found"):
        prepare_dataset("emoji", root=tmp_path / "a")

    shutil.copytree(subset / "emoji-datasource-twitter" / "img", broken / "emoji-datasource-twitter" / "img")
    corrupt = broken / "emoji-datasource-twitter" / "img" / "twitter" / "64" / "1f984.png"
    corrupt.write_bytes(b"not a png")
    with pytest.raises(DataError, match=rf"1 of \d+ emoji images could not be rendered:\n  {corrupt}: "):
        prepare_dataset("emoji", root=tmp_path / "b")

    data_path = broken / "emojibase-data" / "en" / "data.json"
    data = json.loads(data_path.read_text(encoding="utf-8"))
    index = next(i for i, e in enumerate(data) if e["hexcode"] == "1F600")
    del data[index]["label"]
    data_path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(DataError) as e:
        emoji.read_emojibase(broken / "emojibase-data")
    assert str(e.value) == f"{data_path}: entry {index} (1F600): field 'label': missing field"


# --- a train-only style from an Iconify icon set (Fluent) ------------------------------------------------


def _render(svg: str, tmp_path: Path, name: str) -> Image.Image:
    """An SVG document rendered at 32 px (RGBA)."""
    from vislang.data.svg import rasterize_svg
    path = tmp_path / f"{name}.svg"
    path.write_text(svg, encoding="utf-8")
    return rasterize_svg(path, size=32)


def _on_white(im: Image.Image) -> np.ndarray:
    return np.asarray(Image.alpha_composite(Image.new("RGBA", im.size, "white"), im).convert("RGB")).astype(int)


def test_iconify_aliases_flip_and_turn_their_parent(tmp_path):
    # An L-shaped mark in the top-left of a 10 x 10 box, flipped and turned by aliases.
    body = '<path fill="#000" d="M0 0h4v2H0zM0 0h2v4H0z"/>'
    icon_set = {"width": 10, "height": 10, "icons": {"mark": {"body": body}},
                "aliases": {"flipped": {"parent": "mark", "hFlip": True},
                            "flipped-again": {"parent": "flipped", "hFlip": True},
                            "upside-down": {"parent": "mark", "rotate": 2},
                            "loop-a": {"parent": "loop-b"}, "loop-b": {"parent": "loop-a"},
                            "orphan": {"parent": "gone"}}}
    ink = {name: np.asarray(_render(emoji.iconify_icon_svg(icon_set, name), tmp_path, name))[..., 3] > 128
           for name in ("mark", "flipped", "flipped-again", "upside-down")}
    assert ink["mark"][0, 0] and not ink["mark"][0, -1] and ink["mark"].sum() > 50
    assert np.array_equal(ink["flipped"], ink["mark"][:, ::-1])
    assert np.array_equal(ink["flipped-again"], ink["mark"])
    assert np.array_equal(ink["upside-down"], ink["mark"][::-1, ::-1])
    with pytest.raises(DataError, match="alias chain of 'loop-a' is longer than"):
        emoji.iconify_icon_svg(icon_set, "loop-a")
    with pytest.raises(DataError, match=r"no icon 'gone' \(alias of 'orphan'\)"):
        emoji.iconify_icon_svg(icon_set, "orphan")
    wide = {"icons": {"bar": {"body": body, "width": 20}}, "aliases": {"turned": {"parent": "bar", "rotate": 1}}}
    assert 'viewBox="0 0 20 16"' in emoji.iconify_icon_svg(wide, "bar")  # the set's default height: 16
    with pytest.raises(DataError, match="quarter turn of a non-square icon"):
        emoji.iconify_icon_svg(wide, "turned")
    wide["aliases"]["odd"] = {"parent": "bar", "rotate": "half"}
    with pytest.raises(DataError, match=r"field 'icons.odd.rotate': expected a whole number of quarter turns, got 'half'"):
        emoji.iconify_icon_svg(wide, "odd")


def test_label_slug_is_the_iconify_icon_name():
    assert emoji.label_slug("waving hand: medium-dark skin tone") == "waving-hand-medium-dark-skin-tone"
    assert emoji.label_slug("one o’clock") == "one-oclock"
    assert emoji.label_slug("Mrs. Claus") == "mrs-claus"
    assert emoji.label_slug("piñata") == "pinata"
    assert emoji.label_slug("flag: Bosnia & Herzegovina") == "flag-bosnia-and-herzegovina"
    assert emoji.label_slug("flag: Côte d’Ivoire") == "flag-cote-divoire"


def test_label_names_answer_flag_for_and_leave_shared_names_out():
    names = emoji.label_names({"1F1EB-1F1F7": "flag: France", "1F44B": "waving hand",
                               "A": "twin", "B": "Twin"})
    assert names == {"flag-france": "1F1EB-1F1F7", "flag-for-france": "1F1EB-1F1F7", "waving-hand": "1F44B"}


def test_iconify_set_named_by_label(tmp_path, capsys):
    square = '<path fill="#000" d="M0 0h10v10H0z"/>'
    icon_set = {"width": 10, "height": 10,
                "icons": {"waving-hand": {"body": square}, "bear-face": {"body": square},
                          "grinning-face": {"body": square.replace("#000", "#f00")}},
                "aliases": {"waving-hand-light-skin-tone": {"parent": "waving-hand", "hFlip": True},
                            "grinning": {"parent": "bear-face"}}}
    icons_path = tmp_path / "set" / "icons.json"
    icons_path.parent.mkdir()
    icons_path.write_text(json.dumps(icon_set), encoding="utf-8")
    (tmp_path / "set" / "chars.json").write_text("{}", encoding="utf-8")
    labels = {"1F44B": "waving hand", "1F44B-1F3FB": "waving hand: light skin tone", "1F600": "grinning face",
              "1F43B": "bear"}
    by_name = emoji.label_names(labels) | {"grinning": "1F600"}  # an alias naming a concept an icon names too
    files = emoji.iconify_svgs(icons_path, tmp_path / "mystyle", by_name)
    assert sorted(files) == ["1F44B", "1F44B-1F3FB", "1F600"]
    assert files["1F600"].read_text(encoding="utf-8") == emoji.iconify_icon_svg(icon_set, "grinning-face")
    assert files["1F44B-1F3FB"].read_text(encoding="utf-8") == \
        emoji.iconify_icon_svg(icon_set, "waving-hand-light-skin-tone")
    assert "emoji: mystyle: 1 icon name match no CLDR label (e.g. bear-face)" in capsys.readouterr().err
    with pytest.raises(ValueError, match="matched by label: style_images needs the labels"):
        emoji.style_images(tmp_path, emoji.STYLES["noto_v1"], tmp_path / "work")


@needs_npm
def test_fluent_aliases_are_mirror_images(packages, tmp_path):
    # The real set draws "pointing right" as an hFlip alias of "pointing left".
    source = packages / emoji.STYLES["fluent"].package / "icons.json"
    icon_set = json.loads(source.read_text(encoding="utf-8"))
    parent = icon_set["aliases"]["backhand-index-pointing-right"]
    assert parent == {"parent": "backhand-index-pointing-left", "hFlip": True}
    left = _on_white(_render(emoji.iconify_icon_svg(icon_set, parent["parent"]), tmp_path, "l"))
    right = _on_white(_render(emoji.iconify_icon_svg(icon_set, "backhand-index-pointing-right"), tmp_path, "r"))
    assert np.abs(right - left[:, ::-1]).max() <= 16  # anti-aliasing differs by a few levels at the edges
    assert np.abs(right - left).mean() > 10


@needs_npm
def test_train_only_style_adds_training_images_and_changes_no_other_split(subset, text, tmp_path,
                                                                           monkeypatch, capsys):
    monkeypatch.setenv(emoji.NPM_DIR_ENV, str(subset))
    fractions = "val_fraction=0.3,test_fraction=0.3,seed=3"
    plain = prepare_dataset(f"emoji:{fractions}", root=tmp_path / "a")
    more = prepare_dataset(f"emoji:{fractions},train_only=fluent", root=tmp_path / "b")
    err = capsys.readouterr().err
    for split in SPLITS[1:]:
        assert (plain / f"{split}.jsonl").read_bytes() == (more / f"{split}.jsonl").read_bytes()
    train_plain, train_more = read_split(plain, "train"), read_split(more, "train")
    fluent = [r for r in train_more if r["vendor"] == "fluent"]
    assert [r for r in train_more if r["vendor"] != "fluent"] == train_plain
    concepts = {r["concept"] for r in train_plain}
    assert fluent and {r["concept"] for r in fluent} == concepts - {"1F1E9-1F1EA"}  # no Fluent flags
    by_concept = {r["concept"]: r for r in train_plain if r["vendor"] == "twitter"}
    for r in fluent:
        assert r["id"] == f"fluent/{r['concept']}" and r["text"] == by_concept[r["concept"]]["text"]
        with Image.open(more / r["image"]) as im:
            assert im.size == (64, 64) and im.mode == "RGB"
            assert len(np.unique(np.asarray(im).reshape(-1, 3), axis=0)) > 8
    unused = sum(1 for c in SUBSET if emoji.assign_split(text.concepts[c].base, 3, 0.3, 0.3) != "train"
                 and c != "1F1E9-1F1EA")
    assert f"{unused} images of validation and test concepts unused (train-only style)" in err


@needs_npm
def test_validation_style_is_its_own_split_of_training_concepts(subset, text, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(emoji.NPM_DIR_ENV, str(subset))
    fractions = "val_fraction=0.3,test_fraction=0.3,seed=3"
    plain = prepare_dataset(f"emoji:{fractions},train_only=fluent", root=tmp_path / "a")
    held = prepare_dataset(f"emoji:{fractions},train_only=fluent,val_style=noto_v1", root=tmp_path / "b")
    err = capsys.readouterr().err
    assert read_split(plain, "val_new_style") == []  # empty without the option
    for split in SPLITS[:-1]:  # the style is trained on, validated on and tested on nowhere else
        assert (plain / f"{split}.jsonl").read_bytes() == (held / f"{split}.jsonl").read_bytes()
    val_style = read_split(held, "val_new_style")
    assert val_style and {r["vendor"] for r in val_style} == {"noto_v1"}
    train_concepts = {r["concept"] for r in read_split(held, "train")}
    assert {r["concept"] for r in val_style} <= train_concepts  # seen concepts, new style
    assert all(r["id"] == f"noto_v1/{r['concept']}" for r in val_style)
    assert "validation and test concepts unused (validation style)" in err
    assert load_dataset(f"emoji:{fractions},train_only=fluent,val_style=noto_v1", split="val_new_style",
                        root=tmp_path / "b").records[0].id == val_style[0]["id"]


@needs_npm
def test_a_build_without_a_later_split_is_rebuilt(subset, tmp_path, monkeypatch):
    monkeypatch.setenv(emoji.NPM_DIR_ENV, str(subset))
    spec = "emoji:val_fraction=0.3,test_fraction=0.3,seed=3"
    out = prepare_dataset(spec, root=tmp_path)
    (out / "val_new_style.jsonl").unlink()  # as a build from before the split existed
    assert prepare_dataset(spec, root=tmp_path) == out and (out / "val_new_style.jsonl").exists()


@needs_npm
def test_styles_named_by_label_match_real_icons(subset, packages, text, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(emoji.NPM_DIR_ENV, str(subset))
    fractions = "val_fraction=0,test_fraction=0"
    plain = prepare_dataset(f"emoji:{fractions}", root=tmp_path / "a")
    more = prepare_dataset(f"emoji:{fractions},train_only=emojione+emojione_line+noto_v1", root=tmp_path / "b")
    err = capsys.readouterr().err
    train = read_split(more, "train")
    assert [r for r in train if r["vendor"] in ("google", "twitter")] == read_split(plain, "train")
    by_style = {s: {r["concept"] for r in train if r["vendor"] == s} for s in ("emojione", "emojione_line", "noto_v1")}
    tones = {c for c in SUBSET if "-1F3F" in c}
    assert tones <= by_style["noto_v1"] and tones <= by_style["emojione"]  # EmojiOne and Noto v1 draw skin tones
    assert not tones & by_style["emojione_line"]  # the monotone set has none
    assert {"1F600", "1F44B", "1F1E9-1F1EA", "2764"} <= by_style["emojione_line"]
    # Counted, not used: an old CLDR name (now "bear"), and a name that "keycap: #" and "keycap: *" share.
    for style, name in (("emojione", "bear-face"), ("emojione_line", "bear-face"), ("noto_v1", "keycap")):
        assert f"emoji: {style}: 1 icon name match no CLDR label (e.g. {name})" in err
    # The drawing is the real icon of that name: "waving hand: medium-dark skin tone" in Noto v1.
    icon_set = json.loads((packages / emoji.STYLES["noto_v1"].package / "icons.json").read_text(encoding="utf-8"))
    from vislang.data.svg import rasterize_svg
    (tmp_path / "w.svg").write_text(emoji.iconify_icon_svg(icon_set, "waving-hand-medium-dark-skin-tone"),
                                    encoding="utf-8")
    expected = _on_white(rasterize_svg(tmp_path / "w.svg", size=64))
    with Image.open(more / "images" / "noto_v1" / "1F44B-1F3FE.png") as im:
        got = np.asarray(im.convert("RGB")).astype(int)
    assert got.shape == expected.shape == (64, 64, 3) and np.abs(got - expected).max() <= 2
    with Image.open(more / "images" / "emojione_line" / "1F600.png") as im:  # line art: black and white
        grey = np.asarray(im.convert("L")).astype(int)
    assert ((grey < 64) | (grey > 192)).mean() > 0.9 and (grey < 64).mean() > 0.05
