"""The caption judge: a retrieval run's joint space chooses a retrieval-augmented captioner's captions among its
own and its nearest training images' (real tiny runs on the shapes images)."""

from __future__ import annotations

import json

import pytest
import torch

import vislang
from vislang.cli import main
from vislang.errors import VislangError
from vislang.tasks.caption import caption_records, decode_batch
from vislang.tasks.caption_judge import CaptionJudge

pytestmark = pytest.mark.usefixtures("single_torch_thread")

SHAPES = "shapes"


@pytest.fixture(scope="module")
def rag_run(data_root, tmp_path_factory):
    """A ``caption_rag_tiny`` trained one short epoch on 60 shapes images."""
    from vislang.tasks.base import train

    run = tmp_path_factory.mktemp("judge") / "rag"
    train("caption", None, run, overrides=[
        "model=caption_rag_tiny", f"data.name={SHAPES}", f"data.root={data_root}", "data.max_train=60",
        "data.max_val=8", "data.transform.image_size=32", "train.epochs=1", "train.batch_size=16",
        "train.optim.freeze_encoder=true", "task.max_len=12", "train.seed=0"])
    return run


@pytest.fixture(scope="module")
def images(data_root):
    return [r.image for r in vislang.load_dataset(SHAPES, "test", root=data_root).records[:12]]


def _choices(rag_run, retrieval_run, images, **options):
    """The judge's choices for ``images``, and the captioner's own captions and shortlists."""
    captioner = vislang.load(rag_run)
    judge = CaptionJudge.load(retrieval_run, **options)
    x = captioner.images_tensor(images)
    own = decode_batch(captioner.model, x, 2, 12, 1.0)
    emb = vislang.load(retrieval_run).embed_images(images)
    _, choices = judge.choose(captioner.model, x, own, emb, captioner.vocab, 12)
    lists = judge.shortlists(captioner.model, captioner.model.encode(x).pooled, own.tokens, captioner.vocab)
    return choices, [captioner.vocab.decode(t) for t in own.tokens], lists


def test_without_the_joint_space_it_copies_the_nearest_training_caption(rag_run, retrieval_run, images):
    choices, _, _ = _choices(rag_run, retrieval_run, images, weight=0.0, margin=1.0)
    captioner = vislang.load(rag_run)
    model, vocab = captioner.model, captioner.vocab
    pooled = model.encode(captioner.images_tensor(images)).pooled
    nearest = (torch.nn.functional.normalize(pooled, dim=-1) @ model.memory_keys.T).argmax(1)
    expected = [vocab.decode(row) for row in model.memory_tokens[nearest].tolist()]
    assert [c.caption for c in choices] == expected and not any(c.own for c in choices)


def test_a_large_negative_margin_keeps_the_captioners_own_caption(rag_run, retrieval_run, images):
    choices, own, _ = _choices(rag_run, retrieval_run, images, weight=0.0, margin=-10.0)
    assert [c.caption for c in choices] == own


def test_a_large_weight_picks_the_candidate_closest_in_the_joint_space(rag_run, retrieval_run, images):
    choices, _, lists = _choices(rag_run, retrieval_run, images, weight=1000.0, neighbours=3)
    space = vislang.load(retrieval_run)
    emb = space.embed_images(images)
    for i, (choice, lst) in enumerate(zip(choices, lists)):
        assert len(lst.captions) == len(lst.sims) + 1 <= 4 and len(set(lst.captions[:-1])) == len(lst.sims)
        joint = space.embed_texts(lst.captions) @ emb[i]                                   # (C,)
        assert choice.caption == lst.captions[int(joint.argmax())]


def test_the_predictor_the_evaluation_and_the_cli_agree(rag_run, retrieval_run, images, data_root, tmp_path, capsys):
    captioner = vislang.load(rag_run)
    plain = [c.text for c in captioner.caption(images, beam=2)]
    captioner.judge = CaptionJudge.load(retrieval_run, weight=0.0, margin=1.0)  # copy the nearest's caption
    judged = captioner.caption(images, beam=2)
    assert [c.text for c in judged] != plain
    for c in judged:  # attention of every emitted word and EOS, as the captioner reads the chosen caption
        assert c.attention is not None and c.attention.shape[0] == len(c.words) + 1
    records = vislang.load_dataset(SHAPES, "test", root=data_root).records[:12]
    texts, _ = caption_records(captioner.model, records, captioner.vocab, captioner.transform, beam=2, max_len=12,
                               judge=captioner.judge)
    assert texts == [c.text for c in judged]
    assert main(["caption", *map(str, images[:3]), "--model", str(rag_run), "--beam", "2", "--judge",
                 str(retrieval_run), "--judge-weight", "0", "--judge-margin", "1", "--json"]) == 0
    printed = [json.loads(line)["caption"] for line in capsys.readouterr().out.splitlines()]
    assert printed == [c.text for c in judged[:3]]
    out = tmp_path / "eval"
    assert main(["evaluate", "caption", "--model", str(rag_run), "--data", SHAPES, "--split", "test", "--root",
                 str(data_root), "--limit", "12", "--beam", "2", "--length-penalty", "0", "--judge",
                 str(retrieval_run), "--judge-weight", "0", "--judge-margin", "1", "--out", str(out)]) == 0
    assert "judged by" in capsys.readouterr().out
    scores = json.loads((out / "scores.json").read_text())
    assert "weight 0, margin 1," in scores["judge"]
    assert [r["caption"] for r in json.loads((out / "results_model.json").read_text())] == texts


def test_the_service_judges_its_retrieval_augmented_captioners(rag_run, retrieval_run, images):
    from vislang.serve import load_service

    service = load_service([rag_run], judge=retrieval_run)
    (served,) = service.models.values()
    assert isinstance(served.predictor.judge, CaptionJudge)
    with pytest.raises(VislangError, match="none of the models is a retrieval-augmented captioner"):
        load_service([retrieval_run], judge=retrieval_run)


def test_what_it_cannot_judge_is_refused_in_one_line(rag_run, retrieval_run, data_root, tmp_path, capsys):
    with pytest.raises(VislangError, match="not a retrieval model"):
        CaptionJudge.load(rag_run)
    with pytest.raises(VislangError, match="at least 1"):
        CaptionJudge.load(retrieval_run, neighbours=0)
    from vislang.tasks.base import train

    lstm = tmp_path / "lstm"
    train("caption", None, lstm, overrides=[
        "model=caption_lstm_tiny", f"data.name={SHAPES}", f"data.root={data_root}", "data.max_train=16",
        "data.max_val=4", "data.transform.image_size=32", "train.max_steps=1", "train.batch_size=8"])
    image = str(vislang.load_dataset(SHAPES, "test", root=data_root).records[0].image)
    assert main(["caption", image, "--model", str(lstm), "--judge", str(retrieval_run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs a retrieval-augmented captioner (caption_rag)" in err[0]


def test_batches_of_records_line_up_with_their_joint_embeddings(rag_run, retrieval_run, data_root):
    """caption_records embeds every record once and slices per batch: small batches give the same captions."""
    captioner = vislang.load(rag_run)
    judge = CaptionJudge.load(retrieval_run, weight=1000.0)
    records = vislang.load_dataset(SHAPES, "test", root=data_root).records[:10]
    one, _ = caption_records(captioner.model, records, captioner.vocab, captioner.transform, beam=1,
                             batch_size=3, judge=judge)
    all_, _ = caption_records(captioner.model, records, captioner.vocab, captioner.transform, beam=1,
                              batch_size=10, judge=judge)
    assert one == all_


def test_a_judge_with_its_own_preprocessing_reads_the_files_as_its_predictor_does(rag_run, data_root, tmp_path):
    """A judge at another image size than the captioner embeds the image files with its own preprocessing: the
    predictor's choices are those of the evaluation, which embeds the records with the judge's transform."""
    out = tmp_path / "judge48"
    assert main(["train", "retrieval", "--data", SHAPES, "--root", str(data_root), "--model", "dual_encoder_tiny",
                 "--epochs", "1", "--max-steps", "2", "--batch-size", "8", "--image-size", "48", "--seed", "0",
                 "--out", str(out)]) == 0
    captioner = vislang.load(rag_run)
    judge = CaptionJudge.load(out, weight=1000.0)
    assert not judge.same_preprocessing(captioner.trained)
    records = vislang.load_dataset(SHAPES, "test", root=data_root).records[:10]
    files = [r.image for r in records]
    captioner.judge = judge
    x = captioner.images_tensor(files)                                                     # 32 px, the captioner's
    own = vislang.load(out).embed_images(files)                                            # 48 px, the judge's
    assert not torch.allclose(judge.embed_images(x), own, atol=1e-4)  # the captioner's tensors would not do
    torch.testing.assert_close(captioner._judge_embeddings(files, list(range(len(files))), x), own)
    judged = [c.text for c in captioner.caption(files, beam=1, batch_size=4)]
    texts, _ = caption_records(captioner.model, records, captioner.vocab, captioner.transform, beam=1,
                               max_len=captioner.max_len, batch_size=4, judge=judge)
    assert judged == texts
