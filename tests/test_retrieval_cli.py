"""Retrieval end to end in-process on real files: train a tiny dual encoder, embed, evaluate, resume; the
per-gallery protocol, caption sampling and zero-shot classification."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vislang.cli import main
from vislang.config import resolve_config
from vislang.data import load_dataset
from vislang.data.loader import ImageTextSamples, build_loader
from vislang.data.registry import parse_spec
from vislang.data.text import HFTokenizer, Vocabulary
from vislang.data.transforms import TransformConfig, build_transform
from vislang.errors import VislangError
from vislang.inference.retrieval import RetrievalPredictor
from vislang.metrics.retrieval import retrieval_scores
from vislang.models import create_model
from vislang.tasks.retrieval import PairedSamples, RetrievalRunConfig
from vislang.tasks.retrieval_embed import TextBank
from vislang.tasks.retrieval_eval import evaluate_retriever, readable_label
from vislang.tasks.retrieval_galleries import gallery_retrieval_scores, query_texts, subsampled_gallery_scores

SHAPES = "shapes:n_train=40,n_val=8,n_test=8,size=32"
TRAIN = ["train", "retrieval", "--data", SHAPES, "--model", "dual_encoder_tiny", "--batch-size", "8",
         "--image-size", "32", "--set", "task.max_len=24"]


@pytest.fixture(scope="module")
def run(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("retrieval-run") / "run"
    assert main([*TRAIN, "--root", str(data_root), "--max-steps", "2", "--set", "data.transform.trim=true",
                 "--set", "data.transform.zoom_out=0.5", "--out", str(out)]) == 0
    return out


def _pngs(directory: Path, colors: list[str]) -> list[str]:
    paths = []
    for i, color in enumerate(colors):
        p = directory / f"img{i}.png"
        Image.new("RGB", (40, 30), color).save(p)
        paths.append(str(p))
    return paths


def test_train_writes_a_complete_run(run: Path):
    for name in ("config.yaml", "log.jsonl", "curves.png"):
        assert (run / name).is_file(), name
    for name in ("model.safetensors", "config.json", "preprocessor.json", "README.md", "vocab.json",
                 "train_state.pt"):
        assert (run / "checkpoints" / "best" / name).is_file(), name
    spec = json.loads((run / "checkpoints" / "best" / "config.json").read_text())
    pre = json.loads((run / "checkpoints" / "best" / "preprocessor.json").read_text())
    assert spec["task"] == "retrieval" and spec["tokenizer"] == "vocab.json" and spec["max_len"] == 24
    assert pre["trim"] is True and "TrimBackground" in repr(RetrievalPredictor.load(run).transform)
    options = spec["model_config"]
    assert options["text_mode"] == "scratch" and options["text_encoder"] == "text_transformer_tiny"
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    val = [e for e in log if e["kind"] == "val"]
    assert val and {"t2i_R@1", "t2i_R@5", "i2t_R@10", "rsum"} <= set(val[-1])
    train = [e for e in log if e["kind"] == "train"]
    assert {"loss", "i2t", "t2i", "logit_scale"} <= set(train[-1])


def test_embedder_on_real_image_files(run: Path, tmp_path: Path):
    import vislang

    emb = vislang.load(run)
    assert isinstance(emb, RetrievalPredictor) and emb.checkpoint == run / "checkpoints" / "best"
    paths = _pngs(tmp_path, ["red", "blue", "green"])
    images = emb.embed_images(paths, batch_size=2)
    assert images.shape == (3, emb.dim) and images.dtype == torch.float32 and emb.dim == 16
    torch.testing.assert_close(images.norm(dim=-1), torch.ones(3))
    same = emb.embed_images([Image.open(paths[1])])                    # a PIL image gives the same vector
    torch.testing.assert_close(same[0], images[1], atol=1e-6, rtol=1e-5)
    texts = emb.embed_texts(["a red circle", "a small blue square at the left", "a zebra"])
    assert texts.shape == (3, 16)
    torch.testing.assert_close(texts.norm(dim=-1), torch.ones(3))
    assert emb.embed_images([]).shape == (0, 16)
    again = RetrievalPredictor.load(run / "checkpoints" / "best")
    assert again.model_id == emb.model_id and emb.model_id.startswith("dual_encoder_tiny-")
    weights = (run / "checkpoints" / "best" / "model.safetensors").read_bytes()  # the id saved indexes compare
    assert emb.model_id == f"dual_encoder_tiny-{hashlib.sha256(weights).hexdigest()[:16]}"
    assert RetrievalPredictor.load(run, checkpoint="last").model_id == emb.model_id  # best == last after 2 steps
    with pytest.raises(VislangError, match="takes a list of texts"):
        emb.embed_texts("a red circle")


def test_evaluate_retrieval_command(run: Path, data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    out = tmp_path / "eval"
    assert main(["evaluate", "retrieval", "--model", str(run), "--data", SHAPES, "--split", "test",
                 "--root", str(data_root), "--template", "a {label}", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "text->image" in text and "R@5" in text and "zero-shot accuracy" in text
    scores = json.loads((out / "scores.json").read_text())
    assert scores["n_images"] == 8 and scores["galleries"] == {"all": 8}
    assert scores["n_queries"] == sum(len(r.captions) for r in load_dataset(SHAPES, "test", root=data_root))
    assert 0 <= scores["text_to_image"]["R@1"] <= scores["text_to_image"]["R@5"] <= 1
    assert scores["zero_shot"]["prompts"][0].startswith("a ") and scores["zero_shot"]["chance"] > 0
    # the command's numbers are those of the protocol computed by hand from the same embeddings
    emb = RetrievalPredictor.load(run)
    records = load_dataset(SHAPES, "test", root=data_root).records
    texts, owner = query_texts(records)
    ref = retrieval_scores(emb.embed_images([r.image for r in records]), emb.embed_texts(texts), owner)
    assert scores["text_to_image"]["R@5"] == pytest.approx(ref.text_to_image["R@5"])
    assert scores["image_to_text"]["mean_rank"] == pytest.approx(ref.image_to_text["mean_rank"])


def test_resume_continues_a_run(data_root: Path, tmp_path: Path):
    out = tmp_path / "r"  # with pair_views: each sample is two views of a group (here: of one image)
    assert main([*TRAIN, "--root", str(data_root), "--epochs", "2", "--max-steps", "2", "--set",
                 "task.pair_views=true", "--set", "train.log_every=1", "--out", str(out)]) == 0
    assert main(["train", "retrieval", "--out", str(out), "--resume", "--max-steps", "4"]) == 0
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert max(e["step"] for e in log) == 4 and "image_image" in log[0]
    assert Vocabulary.load(out / "checkpoints" / "last" / "vocab.json").itos == \
        Vocabulary.load(out / "checkpoints" / "best" / "vocab.json").itos


def test_init_from_another_run(run: Path, data_root: Path, tmp_path: Path):
    from safetensors.torch import load_file

    out = tmp_path / "warm"
    assert main([*TRAIN, "--root", str(data_root), "--max-steps", "1", "--lr", "1e-12", "--init-from", str(run),
                 "--text-mode", "locked", "--out", str(out)]) == 0
    start = load_file(str(run / "checkpoints" / "best" / "model.safetensors"))
    after = load_file(str(out / "checkpoints" / "last" / "model.safetensors"))
    for key in ("text_proj.weight", "image_proj.weight", "text_encoder.embed.weight"):
        torch.testing.assert_close(after[key], start[key], atol=1e-8, rtol=0)
    assert (out / "checkpoints" / "last" / "vocab.json").read_text() == \
        (run / "checkpoints" / "best" / "vocab.json").read_text()


def test_hf_text_tower_from_a_directory(tiny_bert_dir: Path, data_root: Path, tmp_path: Path):
    out = tmp_path / "hf"
    assert main([*TRAIN, "--root", str(data_root), "--max-steps", "2", "--text-encoder", str(tiny_bert_dir),
                 "--text-mode", "finetune", "--text-lr", "1e-5", "--set", "train.log_every=1",
                 "--out", str(out)]) == 0
    spec = json.loads((out / "checkpoints" / "last" / "config.json").read_text())
    assert spec["model_config"]["text_encoder"] == "hf_text" and spec["model_config"]["text_mode"] == "finetune"
    assert spec["tokenizer"] == "text_encoder" and not (out / "checkpoints" / "last" / "vocab.json").exists()
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert all(e["text_encoder_lr"] < 1e-5 + 1e-12 for e in log if e["kind"] == "train")
    emb = RetrievalPredictor.load(out)
    assert isinstance(emb.tokenizer, HFTokenizer) and emb.embed_texts(["a red circle"]).shape == (1, 16)


def test_bad_text_encoder_and_mode(tmp_path: Path, capsys: pytest.CaptureFixture):
    assert main([*TRAIN, "--text-encoder", "no-such-tower", "--out", str(tmp_path / "a")]) == 2
    assert "not 'scratch', 'gru', 'minilm'" in capsys.readouterr().err
    assert main([*TRAIN, "--text-encoder", "minilm", "--text-mode", "scratch", "--out", str(tmp_path / "b")]) == 2
    assert "use text_mode 'locked' or 'finetune'" in capsys.readouterr().err
    assert main(["evaluate", "retrieval", "--model", str(tmp_path), "--data", SHAPES]) == 2
    assert "not a vislang run or checkpoint directory" in capsys.readouterr().err


def test_one_sampled_caption_per_image_and_group_ids(tmp_path: Path):
    rows = [{"image": f"{i}.png", "text": [f"caption {i} {j}" for j in range(4)], "concept": f"c{i % 2}"}
            for i in range(3)]
    for i in range(3):
        Image.new("RGB", (8, 8), (60 * i, 0, 0)).save(tmp_path / f"{i}.png")
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    records = load_dataset(tmp_path / "m.jsonl").records
    vocab = Vocabulary.build(c for r in records for c in r.captions)
    samples = ImageTextSamples(records, build_transform(TransformConfig(image_size=8)), unit="image_caption",
                               tokenizer=vocab, group_key="concept")
    assert len(samples) == 3 and samples[0]["text"] == "caption 0 0" and samples[1]["group"] == "c1"

    def texts(seed: int) -> list[list[str]]:
        loader = build_loader(samples, 3, shuffle=True, seed=seed)
        return [sorted(b["text"]) for _ in range(4) for b in loader]       # four epochs

    drawn = texts(0)
    assert drawn == texts(0)                                                # seeded
    assert len({t for epoch in drawn for t in epoch}) > 3                  # new captions drawn every epoch

    pairs = PairedSamples(samples)                                          # groups c0 = {0, 2}, c1 = {1}
    assert len(pairs) == 2 and pairs.groups == [[0, 2], [1]]
    batch = next(iter(build_loader(pairs, 2, seed=0)))
    assert batch["image"].shape == (2, 2, 3, 8, 8) and batch["group"] == ["c0", "c1"]
    assert not torch.equal(batch["image"][0, 0], batch["image"][0, 1])    # two different records of c0
    assert batch["tokens"].shape[0] == batch["tokens2"].shape[0] == 2


def test_each_gallery_is_ranked_on_its_own():
    # two galleries (styles) of two images; every image has the same caption text as its twin in the other
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9]])
    texts = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    galleries = ["google", "google", "openmoji", "openmoji"]
    scores = gallery_retrieval_scores(images, texts, [0, 1, 2, 3], galleries)
    assert scores.sizes == {"google": 2, "openmoji": 2}
    assert scores.overall.text_to_image["R@1"] == 1.0 and scores.overall.image_to_text["R@1"] == 1.0
    pooled = retrieval_scores(images, texts, [0, 1, 2, 3])               # one gallery: the twins compete
    assert pooled.text_to_image["R@1"] == 0.5
    np.testing.assert_array_equal(scores.per_gallery["openmoji"].text_ranks, [1, 1])


def test_subsampled_galleries_match_scoring_each_cut_by_hand():
    gen = torch.Generator().manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(30, 8, generator=gen), dim=1)
    owner = [i // 2 for i in range(60)]                                   # two captions per image
    texts = torch.nn.functional.normalize(images[owner] + 0.8 * torch.randn(60, 8, generator=gen), dim=1)
    galleries = ["a"] * 20 + ["b"] * 10
    sub = subsampled_gallery_scores(images, texts, owner, galleries, size=12, draws=3, seed=5)
    assert sub["gallery_size"] == 12 and sub["draws"] == 3
    rng, r1 = np.random.default_rng(5), []
    for _ in range(3):  # the same cuts: 12 of gallery "a", all 10 of the smaller gallery "b"
        keep = np.sort(np.concatenate([rng.permutation(np.arange(20))[:12], rng.permutation(np.arange(20, 30))]))
        q = [t for t in range(60) if owner[t] in set(keep.tolist())]
        local = {int(i): k for k, i in enumerate(keep)}
        ref = gallery_retrieval_scores(images[keep], texts[q], [local[owner[t]] for t in q],
                                       [galleries[i] for i in keep])
        r1.append(ref.overall.text_to_image["R@1"])
    assert sub["text_to_image"]["R@1"] == pytest.approx(np.mean(r1))
    assert sub["text_to_image_std"]["R@1"] == pytest.approx(np.std(r1))
    full = gallery_retrieval_scores(images, texts, owner, galleries)
    whole = subsampled_gallery_scores(images, texts, owner, galleries, size=100, draws=2)
    assert whole["text_to_image"] == pytest.approx(full.overall.text_to_image)  # a cut as big as the gallery
    with pytest.raises(VislangError, match="must be >= 1"):
        subsampled_gallery_scores(images, texts, owner, galleries, size=0)


def test_evaluate_retrieval_on_smaller_galleries(run: Path, data_root: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture):
    out = tmp_path / "eval"
    assert main(["evaluate", "retrieval", "--model", str(run), "--data", SHAPES, "--split", "test",
                 "--root", str(data_root), "--gallery-size", "4", "--gallery-draws", "3", "--out", str(out)]) == 0
    assert "R@1 (galleries of 4, 3 draws)" in capsys.readouterr().out
    scores = json.loads((out / "scores.json").read_text())
    assert scores["subsampled"]["gallery_size"] == 4 and scores["subsampled"]["draws"] == 3
    assert scores["text_to_image"]["R@1"] <= scores["subsampled"]["text_to_image"]["R@5"] + 1e-9
    assert main(["evaluate", "retrieval", "--model", str(run), "--data", SHAPES, "--split", "test",
                 "--root", str(data_root), "--gallery-size", "0"]) == 2
    assert "--gallery-size and --gallery-draws must be >= 1" in capsys.readouterr().err


def test_zero_shot_classification_on_a_manifest(run: Path, tmp_path: Path):
    rows = []
    for i, color in enumerate(["red", "blue", "red", "green"]):
        Image.new("RGB", (32, 32), color).save(tmp_path / f"{i}.png")
        rows.append({"image": f"{i}.png", "label": f"{color}_thing"})        # labels, no captions
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    ev = evaluate_retriever(run, str(tmp_path / "m.jsonl"), None, template="a {label}")
    assert ev.n_queries == 0 and ev.zero_shot is not None
    assert ev.zero_shot["prompts"] == ["a blue thing", "a green thing", "a red thing"]
    assert ev.zero_shot["majority"] == 0.5 and ev.zero_shot["n_classes"] == 3
    assert readable_label("smileys-emotion") == "smileys emotion"
    with pytest.raises(VislangError, match="no {label} placeholder"):
        evaluate_retriever(run, str(tmp_path / "m.jsonl"), None, template="an emoji")


def test_style_augmentation_and_grouped_batches_train(data_root: Path, tmp_path: Path):
    out = tmp_path / "styled"
    assert main([*TRAIN, "--root", str(data_root), "--max-steps", "3", "--set", "data.transform.outline=0.5",
                 "--set", "task.batch_group_key=n_objects", "--set", "task.batch_group_run=3",
                 "--set", "model_kwargs.image_encoder_kwargs.mixstyle=0.5", "--out", str(out)]) == 0
    spec = json.loads((out / "checkpoints" / "last" / "config.json").read_text())
    pre = json.loads((out / "checkpoints" / "last" / "preprocessor.json").read_text())
    assert pre["outline"] == 0.5 and spec["model_config"]["image_encoder_kwargs"]["mixstyle"] == 0.5
    model = RetrievalPredictor.load(out).model
    assert sum(type(m).__name__ == "MixStyle" for m in model.modules()) == 2
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert max(e["step"] for e in log) == 3 and all(np.isfinite(e["loss"]) for e in log if "loss" in e)

def test_bad_style_options_are_named(data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    for option, named in (("data.transform.outline=2", "data.transform.outline is a probability"),
                          ("model_kwargs.image_encoder_kwargs.mixstyle=1.5", "mixstyle is a probability"),
                          ("task.batch_group_run=0", "batch_group_run")):
        assert main([*TRAIN, "--root", str(data_root), "--max-steps", "1", "--set", option,
                     "--set", "task.batch_group_key=n_objects", "--out", str(tmp_path / "bad")]) != 0
        assert named in capsys.readouterr().err
    assert main([*TRAIN, "--root", str(data_root), "--max-steps", "1", "--set", "task.batch_group_key=nosuch",
                 "--out", str(tmp_path / "bad")]) != 0
    err = capsys.readouterr().err
    assert "task.batch_group_key: no training record" in err and "'nosuch'" in err


def test_the_shipped_emoji_recipe_is_a_valid_config(tiny_bert_dir: Path, data_root: Path, tmp_path: Path):
    recipe = Path(__file__).resolve().parents[1] / "configs" / "retrieval_emoji.yaml"
    cfg = resolve_config(RetrievalRunConfig, recipe, [])
    assert cfg.text_encoder == "minilm" and cfg.data.name.startswith("emoji:") and cfg.data.transform.trim and cfg.task.text_bank
    assert 0 < cfg.data.transform.outline <= 1 and 0 < cfg.data.transform.flatten <= 1 and cfg.model_kwargs["image_pool_grid"] == 4
    name, options = parse_spec(cfg.data.name)  # extra training styles only: the test splits stay the default ones
    assert name == "emoji" and set(options["train_only"]) == {"fluent", "fluent_line", "emojione", "emojione_line"}
    assert tuple(options["val_style"]) == ("noto_v1",) and cfg.data.val_split == "val+val_new_style"  # a style never trained on
    extra = ("train_only", "val_style")
    assert {k: v for k, v in options.items() if k not in extra} == {
        k: v for k, v in parse_spec("emoji")[1].items() if k not in extra}
    out = tmp_path / "recipe"  # the same recipe on tiny data with a tiny model (a locked tiny BERT) runs end to end
    assert main(["train", "retrieval", "--config", str(recipe), "--data", SHAPES, "--root", str(data_root),
                 "--model", "dual_encoder_tiny", "--text-encoder", str(tiny_bert_dir), "--batch-size", "8",
                 "--max-steps", "2", "--set", "data.val_split=val", "--out", str(out)]) == 0
    saved = resolve_config(RetrievalRunConfig, out / "config.yaml", [])
    assert saved.data.transform.outline == cfg.data.transform.outline and saved.train.epochs == cfg.train.epochs
    assert saved.task.text_bank
    scratch = ["train", "retrieval", "--config", str(recipe), "--data", SHAPES, "--root", str(data_root),
               "--model", "dual_encoder_tiny", "--text-encoder", "scratch", "--batch-size", "8", "--max-steps", "2",
               "--set", "data.val_split=val"]
    assert main([*scratch, "--set", "task.text_bank=false", "--out", str(tmp_path / "scratch")]) == 0


def test_text_bank_holds_every_training_caption_and_masks_the_group(tiny_bert_dir: Path, tmp_path: Path):
    rows = [{"image": "0.png", "text": ["a red circle", "a red square"], "concept": "c0"},
            {"image": "1.png", "text": ["a blue circle"], "concept": "c1"},
            {"image": "2.png", "text": ["a red circle"], "concept": "c0"}]   # c0 drawn twice, one caption shared
    for i in range(3):
        Image.new("RGB", (8, 8), (60 * i, 0, 0)).save(tmp_path / f"{i}.png")
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    records = load_dataset(tmp_path / "m.jsonl").records
    model = create_model("dual_encoder_hf_tiny", text_encoder_kwargs={"path": str(tiny_bert_dir)})
    tokenizer = HFTokenizer(tiny_bert_dir)
    bank = TextBank(model, tokenizer, records, "concept", max_len=16)
    assert bank.captions == ["a blue circle", "a red circle", "a red square"] and len(bank) == 3
    target, masked = bank.targets(["a red circle", "a blue circle"], ["c0", "c1"])
    assert target.tolist() == [1, 0]
    assert masked.tolist() == [[False, False, True], [False, False, False]]  # c0's other caption is no negative
    ids = torch.tensor([tokenizer.encode("a red square", max_len=16)])
    torch.testing.assert_close(bank.features[2], model.text_features(ids, torch.ones_like(ids))[0])


def test_train_with_a_text_bank(tiny_bert_dir: Path, data_root: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture):
    out = tmp_path / "bank"
    assert main([*TRAIN, "--root", str(data_root), "--max-steps", "3", "--text-encoder", str(tiny_bert_dir),
                 "--set", "task.text_bank=true", "--set", "train.log_every=1", "--out", str(out)]) == 0
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    train = [e for e in log if e["kind"] == "train"]
    assert len(train) == 3 and all(np.isfinite(e["loss"]) and np.isfinite(e["i2t"]) for e in train)
    # the bank ranks each image over all 40+ training captions, not the batch's 8: a larger first i2t loss
    assert train[0]["i2t"] > np.log(8)
    assert main([*TRAIN, "--root", str(data_root), "--max-steps", "1", "--set", "task.text_bank=true",
                 "--out", str(tmp_path / "bad")]) == 2                    # a scratch text tower
    assert "task.text_bank needs a locked text tower" in capsys.readouterr().err
