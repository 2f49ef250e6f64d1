"""The retrieval-augmented captioner: neighbour lookup, exclusion in training, copying, and a real run."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import vislang
from vislang.decoding import greedy
from vislang.errors import VislangError
from vislang.models import create_model
from vislang.tasks import train


def _model(keys, tokens, groups, **kwargs):
    model = create_model("caption_rag_tiny", memory_size=len(keys), **kwargs).eval()
    model.set_memory(keys, tokens, groups)
    return model


def _memory(m=6, d=32, length=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(4, 50, (m, length), generator=g)
    tokens[:, 3], tokens[:, 4:] = 2, 0  # three words, EOS, padding
    return torch.randn(m, d, generator=g), tokens, torch.tensor([0, 0, 1, 1, 2, 2])


def test_lookup_finds_the_nearest_entries_and_training_never_returns_an_images_own_row_or_group():
    keys, tokens, groups = _memory()
    model = _model(keys, tokens, groups, neighbours=2)
    sims, idx = model.lookup(keys[[4, 1]])
    assert idx[:, 0].tolist() == [4, 1] and torch.allclose(sims[:, 0], torch.ones(2), atol=1e-5)
    rows = torch.arange(6)
    _, idx = model.lookup(keys, rows)                         # exclude_group 0.5: never itself
    assert not (idx == rows.unsqueeze(1)).any()
    model.cfg.exclude_group = 1.0                             # never its group
    _, idx = model.lookup(keys, rows)
    assert not (groups[idx] == groups.unsqueeze(1)).any()


def test_trained_on_changing_memories_it_copies_captions_it_never_saw():
    torch.manual_seed(0)
    keys, tokens, groups = _memory(m=6)
    model = _model(keys, tokens, groups, neighbours=1).train()
    opt = torch.optim.Adam([p for n, p in model.named_parameters() if not n.startswith("image_encoder")], lr=1e-2)
    for step in range(100):   # target: the nearest entry's caption, from a new memory each step
        model.set_memory(keys, _memory(m=6, seed=100 + step)[1], groups)
        images = torch.randn(16, 3, 32, 32)
        with torch.no_grad():
            _, idx = model.lookup(model.encode(images).pooled)
        target = torch.cat([torch.ones(16, 1, dtype=torch.long), model.memory_tokens[idx[:, 0], :4]], 1)  # (B, 5)
        out = model(images, target)
        loss = torch.nn.functional.cross_entropy(out.logits.reshape(-1, 50), target[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    new = _memory(m=6, seed=1)[1]                              # captions never trained on
    model.set_memory(keys, new, groups)
    model.eval()
    images = torch.randn(30, 3, 32, 32)
    _, idx = model.lookup(model.encode(images).pooled)
    out = greedy(model, images, max_len=8)
    assert out.tokens == [new[i, :3].tolist() for i in idx[:, 0].tolist()]


def test_the_copy_mixture_is_a_distribution():
    keys, tokens, groups = _memory()
    model = _model(keys, tokens, groups)
    images = torch.randn(3, 3, 32, 32)
    state = model.init_state(model.encode(images))
    logp, attention, _ = model.step(torch.full((3,), model.bos_id), state)
    assert torch.allclose(logp.exp().sum(-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(attention.sum(-1), torch.ones(3))


def test_a_retrieval_augmented_run_trains_loads_and_captions_from_its_memory(tmp_path, data_root, monkeypatch):
    import json

    import vislang.tasks.caption as caption_task

    filled = []
    def fill_memory(model, records, *args, **kwargs):  # the real filling, watched: once for both val splits
        filled.append(len(records))
        return real_fill(model, records, *args, **kwargs)
    real_fill = caption_task.fill_memory
    monkeypatch.setattr(caption_task, "fill_memory", fill_memory)
    run = tmp_path / "rag"
    result = train("caption", None, run, overrides=[
        "model=caption_rag_tiny", "data.name=shapes", f"data.root={data_root}", "data.max_train=60",
        "data.max_val=10", "data.transform.image_size=32", "train.epochs=1", "train.batch_size=16",
        "train.optim.freeze_encoder=true", "task.max_len=12", "data.val_split=val+test"])
    assert result.best_metric is not None and filled == [60]
    val = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if '"val"' in x][-1]
    assert val["CIDEr-D"] == pytest.approx((val["val/CIDEr-D"] + val["test/CIDEr-D"]) / 2)
    predictor = vislang.load(run)
    memory, vocab = predictor.model.memory_tokens, predictor.vocab
    train_records = vislang.load_dataset("shapes", "train", root=data_root).records[:60]
    assert memory.shape[0] == 60
    for i in (0, 59):  # each row: the first caption's tokens, no BOS, cut to memory_len (EOS kept)
        ids = vocab.encode(train_records[i].captions[0], max_len=memory.shape[1] + 1)[1:]
        assert memory[i, :len(ids)].tolist() == ids and (memory[i, len(ids):] == vocab.pad_id).all()
    caps = predictor.caption([Image.new("RGB", (32, 32), "red")], beam=2)
    assert isinstance(caps[0].text, str)


def test_training_it_with_a_trainable_encoder_is_refused_in_one_line(tmp_path):
    with pytest.raises(VislangError, match="freeze_encoder=true"):
        train("caption", None, tmp_path / "r", overrides=["model=caption_rag_tiny", "data.name=shapes"])


def test_decoding_returns_the_likeliest_of_the_decoded_and_the_neighbours_captions():
    from vislang.decoding import beam_search
    from vislang.tasks.caption import decode_batch

    torch.manual_seed(3)
    keys, tokens, groups = _memory()
    model = _model(keys, tokens, groups, neighbours=3)
    images = torch.randn(4, 3, 32, 32)
    plain = beam_search(model, images, 2, 8, length_penalty=1.0)
    out = decode_batch(model, images, 2, 8, length_penalty=1.0)
    neighbours = model.neighbour_captions(model.encode(images))

    def score(i, toks):  # log p / length under teacher forcing, EOS counted
        seq = torch.tensor([[model.bos_id, *toks, model.eos_id]])
        logp = model(images[i:i + 1], seq).logits.log_softmax(-1)[0].gather(-1, seq[0, 1:, None]).sum()
        return (logp / (len(toks) + 1)).item()

    for i in range(4):
        options = [plain.tokens[i], *neighbours[i]]
        assert out.tokens[i] in options
        assert score(i, out.tokens[i]) >= max(score(i, t) for t in options) - 1e-5
