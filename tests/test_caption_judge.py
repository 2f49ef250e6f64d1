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


@pytest.fixture()
def judge_copy(retrieval_run, tmp_path):
    """A copy of the shared retrieval run (its folder gets a judge memory written into it)."""
    import shutil

    return shutil.copytree(retrieval_run, tmp_path / "judge")


def test_a_judge_memory_is_kept_with_the_weights_and_read_back(judge_copy, data_root, rag_run, images, tmp_path,
                                                               capsys):
    train = vislang.load_dataset(SHAPES, "train", root=data_root).records[:40]
    judge = CaptionJudge.load(judge_copy)
    assert judge.memory is None and "no judge memory" in judge.describe()
    built = judge.build_memory(train)
    assert "embeds 40 training images" in capsys.readouterr().err
    assert built.keys.shape == (40, judge.space.model.embed_dim) and built.captions == [r.captions[0] for r in train]
    torch.testing.assert_close(built.keys, vislang.load(judge_copy).embed_images([r.image for r in train]))
    again = CaptionJudge.load(judge_copy)
    assert again.memory.captions == built.captions and torch.equal(again.memory.keys, built.keys)
    assert "its memory of 40 images" in again.describe()
    captioner = vislang.load(rag_run)
    captioner.judge = again
    assert len(captioner.caption(images[:4], beam=2)) == 4
    out = tmp_path / "eval"  # the evaluation adds the judge's own nearest-training-image baseline
    assert main(["evaluate", "caption", "--model", str(rag_run), "--data", SHAPES, "--split", "test", "--root",
                 str(data_root), "--limit", "6", "--judge", str(judge_copy), "--out", str(out)]) == 0
    assert "nearest training image (judge)" in capsys.readouterr().out
    test = vislang.load_dataset(SHAPES, "test", root=data_root).records[:6]
    nearest = (vislang.load(judge_copy).embed_images([r.image for r in test]) @ built.keys.T).argmax(1)
    baseline = json.loads((out / "results_nearest_training_image_judge.json").read_text())
    assert [r["caption"] for r in baseline] == [built.captions[j] for j in nearest.tolist()]


def test_with_a_memory_both_spaces_choose_the_caption(rag_run, retrieval_run, images, data_root):
    """Weight 0 and a large margin: where the judge's nearest training image is the more similar, the caption with
    the best sum of its similarities in the two spaces (each list's least for a caption it lacks); elsewhere the
    caption of the most similar training image in either space."""
    from vislang.tasks.caption_judge import JudgeMemory

    captioner = vislang.load(rag_run)
    model, vocab = captioner.model, captioner.vocab
    space = vislang.load(retrieval_run)
    train = vislang.load_dataset(SHAPES, "train", root=data_root).records[60:120]  # not the captioner's memory
    plain = CaptionJudge.load(retrieval_run)
    memory = JudgeMemory(space.embed_images([r.image for r in train]), [r.captions[0] for r in train],
                         plain.fingerprint)
    k = 3
    judge = CaptionJudge(plain.space, weight=0.0, margin=1.0, neighbours=k, memory=memory)
    x = captioner.images_tensor(images)
    own = decode_batch(model, x, 1, 12, 0.0)
    emb = space.embed_images(images)
    _, choices = judge.choose(model, x, own, emb, vocab, 12)

    length = model.memory_tokens.shape[1]
    enc_caps = [vocab.decode(row) for row in model.memory_tokens.tolist()]
    joint_caps = [vocab.decode(vocab.encode(c, max_len=length + 1)) for c in memory.captions]  # as the memory cuts

    def best_of(sims, caps):  # caption -> similarity of its nearest image, for the k most similar captions
        out = {}
        for j in sims.argsort(descending=True).tolist():
            out.setdefault(caps[j], float(sims[j]))
            if len(out) == k:
                return out
        return out

    with torch.no_grad():
        enc_all = torch.nn.functional.normalize(model.encode(x).pooled, dim=-1) @ model.memory_keys.T  # (B, M)
    joint_all = emb @ memory.keys.T                                                                 # (B, M')
    agreed = 0
    for i, choice in enumerate(choices):
        enc, joint = best_of(enc_all[i], enc_caps), best_of(joint_all[i], joint_caps)
        if max(joint.values()) >= max(enc.values()):
            agreed += 1
            lo_e, lo_j = min(enc.values()), min(joint.values())
            scores = {c: enc.get(c, lo_e) + joint.get(c, lo_j) for c in {**enc, **joint}}
        else:
            scores = {c: max(enc.get(c, -9.0), joint.get(c, -9.0)) for c in {**enc, **joint}}
        assert choice.caption == max(scores, key=scores.get) and not choice.own
    assert 0 < agreed < len(images)  # both rules were used (else the test shows less than it says)


def test_memory_captions_with_words_the_captioner_lacks_are_not_candidates(rag_run, retrieval_run, images):
    from vislang.tasks.caption_judge import JudgeMemory

    captioner = vislang.load(rag_run)
    space = vislang.load(retrieval_run)
    plain = CaptionJudge.load(retrieval_run)
    emb = space.embed_images(images)
    memory = JudgeMemory(emb.clone(), ["a zyzzyva quokka"] * len(images), plain.fingerprint)  # each image's twin
    judge = CaptionJudge(plain.space, weight=0.0, margin=1.0, memory=memory)
    x = captioner.images_tensor(images)
    own = decode_batch(captioner.model, x, 1, 12, 0.0)
    lists = judge.shortlists(captioner.model, captioner.model.encode(x).pooled, own.tokens, captioner.vocab, emb)
    assert all("zyzzyva" not in c and "<unk>" not in c for lst in lists for c in lst.captions[:-1])


def test_a_wrong_or_damaged_memory_is_refused_in_one_line(judge_copy, rag_run, data_root, capsys):
    from vislang.tasks.caption_judge import MEMORY_FILE, JudgeMemory

    judge = CaptionJudge.load(judge_copy)
    with pytest.raises(VislangError, match="embedded by other weights"):
        CaptionJudge(judge.space, memory=JudgeMemory(torch.zeros(2, 4), ["a", "b"], "dual_encoder_tiny-0123"))
    judge.build_memory(vislang.load_dataset(SHAPES, "train", root=data_root).records[:8])
    path = judge.space.folder / MEMORY_FILE
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(VislangError, match="corrupt or partial") as e:
        CaptionJudge.load(judge_copy)
    assert "\n" not in str(e.value)
    image = str(vislang.load_dataset(SHAPES, "test", root=data_root).records[0].image)
    capsys.readouterr()
    assert main(["caption", image, "--model", str(rag_run), "--judge", str(judge_copy)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "corrupt or partial" in err[0]
