"""The text-to-image generator on a real tiny run (``generate_run``: 3 steps on the shapes images): what training
writes (validation loss, EMA weights), seeded and batch-independent sampling, classifier-free guidance at the
noise-prediction level, save/load, bitwise resume, per-token attention maps and bad prompts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from vislang.cli import main
from vislang.errors import VislangError

pytest.importorskip("diffusers")
pytestmark = pytest.mark.usefixtures("single_torch_thread")  # tiny models: one thread is fastest

SHAPES = "shapes:n_train=40,n_val=8,n_test=8,size=32"
PROMPT = "a small red circle at the left"
STEPS = 4  # sampler steps: enough to exercise the schedulers, cheap


@pytest.fixture(scope="module")
def gen(generate_run: Path):
    from vislang.inference.generate import GeneratePredictor

    return GeneratePredictor.load(generate_run)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    import safetensors.torch

    return safetensors.torch.load_file(str(folder / "model.safetensors"))


def test_training_writes_a_generator_folder_with_ema_weights(generate_run: Path):
    log = [json.loads(line) for line in (generate_run / "log.jsonl").read_text().splitlines()]
    val = [e for e in log if e["kind"] == "val"]
    assert val and all(torch.isfinite(torch.tensor(e["val_loss"])) for e in val)
    best = generate_run / "checkpoints" / "best"
    config = json.loads((best / "config.json").read_text())
    assert config["task"] == "generate" and config["model"] == "diffusion_unet_tiny"
    assert config["model_config"]["text_mode"] == "scratch" and config["max_len"] == 32
    assert (best / "vocab.json").is_file()
    state = _weights(best)
    raw = {k[len("unet."):]: v for k, v in state.items() if k.startswith("unet.")}
    ema = {k[len("ema_unet."):]: v for k, v in state.items() if k.startswith("ema_unet.")}
    assert raw and raw.keys() == ema.keys()
    # after 3 steps at decay 0.9 the average trails the trained weights: different, but close
    changed = [k for k in raw if raw[k].is_floating_point() and not torch.equal(raw[k], ema[k])]
    assert len(changed) > len(raw) // 2
    k = changed[0]
    assert 0 < float((raw[k] - ema[k]).abs().max()) < 0.1


def test_sampling_is_deterministic_per_seed(gen):
    a = gen.generate_tensor([PROMPT], n=2, steps=STEPS, seed=3)
    b = gen.generate_tensor([PROMPT], n=2, steps=STEPS, seed=3)
    c = gen.generate_tensor([PROMPT], n=2, steps=STEPS, seed=4)
    assert a.shape == (2, 3, 16, 16) and float(a.min()) >= 0 and float(a.max()) <= 1
    assert torch.equal(a, b)
    assert not torch.equal(a[0], a[1])                     # seeds 3 and 4 within one call
    assert torch.allclose(c[0], a[1], atol=1e-5)          # seed 4, first or second in its call
    assert not torch.allclose(a[0], c[0], atol=1e-3)
    for sampler in ("ddim", "dpm"):
        x = gen.generate_tensor([PROMPT], steps=STEPS, seed=0, sampler=sampler)
        assert torch.equal(x, gen.generate_tensor([PROMPT], steps=STEPS, seed=0, sampler=sampler))


def test_sample_j_is_the_seed_plus_j_sample_alone(gen):
    prompts = [PROMPT, "a big blue square"]
    many = gen.generate_tensor(prompts, n=3, steps=STEPS, seed=10, batch_size=4)   # batches of 4 and 2
    assert many.shape == (6, 3, 16, 16)
    for j in range(6):
        alone = gen.generate_tensor([prompts[j // 3]], n=1, steps=STEPS, seed=10 + j)
        assert torch.allclose(many[j], alone[0], atol=1e-5), j
    out = gen.generate(prompts, n=3, steps=STEPS, seed=10, warn=False)
    assert [g.seed for g in out] == list(range(10, 16)) and [g.prompt for g in out] == [prompts[0]] * 3 + [prompts[1]] * 3
    assert out[4].image.size == (16, 16) and out[4].warning is None


def test_guidance_mixes_the_conditional_and_unconditional_predictions(gen):
    model = gen.model
    context, uncond = gen.contexts([PROMPT])
    noise = gen.noise(7)
    plain = model.sample(context, None, steps=STEPS, noise=noise)
    assert torch.equal(model.sample(context, uncond, guidance=1.0, steps=STEPS, noise=noise), plain)
    assert not torch.allclose(model.sample(context, uncond, guidance=3.0, steps=STEPS, noise=noise), plain, atol=1e-4)
    # guidance 0 is the unconditional model alone
    assert torch.allclose(model.sample(context, uncond, guidance=0.0, steps=STEPS, noise=noise),
                          model.sample(uncond, None, steps=STEPS, noise=noise), atol=1e-5)
    # one DDIM step by hand: eps = eps_u + g * (eps_c - eps_u) from the EMA UNet, then the scheduler's step
    g = 2.5
    scheduler = model.noise_scheduler("ddim")
    scheduler.set_timesteps(1)
    t = scheduler.timesteps[0]
    x = noise * scheduler.init_noise_sigma
    with torch.no_grad():
        eps_c = model(x, t.expand(1), context, ema=True)
        eps_u = model(x, t.expand(1), uncond, ema=True)
        assert not torch.allclose(eps_c, eps_u, atol=1e-6)  # the text matters to the trained model
        eps_raw = model(x, t.expand(1), context, ema=False)
        assert not torch.allclose(eps_c, eps_raw, atol=1e-6)  # sampling reads the EMA weights, not the raw ones
        want = scheduler.step(eps_u + g * (eps_c - eps_u), t, x, return_dict=False)[0].clamp(-1, 1)
    got = model.sample(context, uncond, guidance=g, steps=1, noise=noise)
    assert torch.allclose(got, want, atol=1e-5)


def test_a_loaded_folder_draws_the_same_images(gen, generate_run: Path, tmp_path: Path):
    from vislang.inference.generate import GeneratePredictor

    best = generate_run / "checkpoints" / "best"
    copy = shutil.copytree(best, tmp_path / "moved")
    want = gen.generate_tensor([PROMPT], n=2, steps=STEPS, seed=1)
    for folder in (best, copy):
        again = GeneratePredictor.load(folder)
        assert torch.equal(again.generate_tensor([PROMPT], n=2, steps=STEPS, seed=1), want)
    saved, live = _weights(copy), again.model.state_dict()
    assert saved.keys() == live.keys()                                # strict: no missing or extra tensor
    assert all(torch.equal(saved[k], live[k]) for k in saved)
    assert again.model.load_state_dict(saved, strict=True) is not None


def _train(data_root: Path, out: Path, steps: int, *extra: str) -> None:
    assert main(["train", "generate", "--data", SHAPES, "--root", str(data_root), "--model", "diffusion_unet_tiny",
                 "--epochs", "1", "--max-steps", str(steps), "--batch-size", "8", "--image-size", "16",
                 "--seed", "0", "--set", "train.optim.warmup_ratio=0", "--set", "train.optim.min_lr_ratio=1",
                 "--set", "data.max_val=4", "--out", str(out), *extra]) == 0


def test_a_resumed_run_reaches_bitwise_the_weights_of_an_uninterrupted_one(data_root: Path, tmp_path: Path):
    """2 steps, then resumed to 4, against 4 straight (a constant learning rate, so the schedule does not
    depend on where the run stopped): the UNet, its EMA copy and the text tower all bitwise equal."""
    _train(data_root, tmp_path / "straight", 4)
    _train(data_root, tmp_path / "resumed", 2)
    two = _weights(tmp_path / "resumed" / "checkpoints" / "last")
    _train(data_root, tmp_path / "resumed", 4, "--resume")
    a, b = (_weights(tmp_path / run / "checkpoints" / "last") for run in ("straight", "resumed"))
    assert a.keys() == b.keys() and any(k.startswith("ema_unet.") for k in a)
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    for part in ("unet.", "ema_unet.", "text_encoder."):  # not a vacuous match: steps 3-4 moved every part
        assert any(not torch.equal(a[k], two[k]) for k in a if k.startswith(part)), part
    logs = [[json.loads(x) for x in (tmp_path / r / "log.jsonl").read_text().splitlines()]
            for r in ("straight", "resumed")]
    final = [[e["val_loss"] for e in log if e["kind"] == "val" and e["step"] == 4] for log in logs]
    assert final[0] == final[1] and len(final[0]) == 1


def test_explain_maps_one_distribution_per_token(gen):
    why = gen.explain(PROMPT, steps=STEPS, seed=2)
    ids = gen.tokenizer.encode(PROMPT, max_len=gen.max_len)
    assert why.tokens == ["[start]", *PROMPT.split(), "[end]"] and len(ids) == len(why.tokens)
    t, h, w = why.maps.shape
    assert t == len(why.tokens) and h == w == 8                      # the 8x8 cross-attention level of 16 px
    assert torch.isfinite(why.maps).all() and (why.maps >= 0).all()
    assert torch.allclose(why.maps.sum((1, 2)), torch.ones(t), atol=1e-5)
    assert why.weights.shape == (t,) and float(why.weights.sum()) == pytest.approx(1.0, abs=1e-5)
    # the recorded run draws the image generate() draws for that seed (to a grey level)
    alone = gen.generate([PROMPT], steps=STEPS, seed=2, warn=False)[0].image
    diff = torch.tensor(list(why.image.tobytes())) - torch.tensor(list(alone.tobytes()))
    assert int(diff.abs().max()) <= 1
    unknown = gen.explain("a zebra", steps=1)
    assert unknown.tokens == ["[start]", "a", "[unknown]", "[end]"]


@pytest.mark.parametrize(("prompts", "message"), [
    ([""], "prompt 1 is empty"),
    (["a red circle", "   \n"], "prompt 2 is empty"),
    (["a red circle", 3], "prompt 2 is not text (got int)"),
    ("a red circle", "prompts must be a list of texts"),
    ([None], "prompt 1 is not text (got NoneType)"),
])
def test_bad_prompts_are_refused_in_one_line(gen, prompts, message):
    with pytest.raises(VislangError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        gen.generate(prompts, steps=1)


def test_bad_options_are_refused(gen):
    from vislang.inference.generate import MAX_SAMPLES

    for kwargs, message in (({"n": MAX_SAMPLES + 1}, f"at most {MAX_SAMPLES}"), ({"steps": 0}, "steps must be"),
                            ({"guidance": -1.0}, "guidance must be in"), ({"sampler": "euler"}, "unknown sampler")):
        with pytest.raises(VislangError, match=message):
            gen.generate([PROMPT], **{"steps": 1, **kwargs})
    with pytest.raises(VislangError, match=f"at most {MAX_SAMPLES}"):
        gen.generate([PROMPT] * 65, n=4, steps=1)


def test_an_overlong_prompt_is_truncated_with_a_warning(gen, capsys):
    long = " ".join(["a red circle"] * 15)                              # 45 words + 2 specials > max_len 32
    out = gen.generate([PROMPT, long], steps=1, seed=0)
    err = capsys.readouterr().err
    assert err.startswith("warning: prompt 2 is 47 tokens long; only its first 32 are read") and err.count("\n") == 1
    assert out[0].warning is None and "prompt 2 is 47 tokens long" in out[1].warning
    assert gen.generate([long], steps=1, seed=0, warn=False)[0].image.size == (16, 16)
    assert capsys.readouterr().err == ""
    # truncation keeps the first max_len tokens: the same image as the prompt cut to them
    cut = " ".join(long.split()[:30])
    assert torch.equal(gen.generate_tensor([long], steps=STEPS, seed=5), gen.generate_tensor([cut], steps=STEPS, seed=5))


def test_train_generate_offers_the_text_tower_choice(capsys):
    from vislang.tasks.generate import GenerateRunConfig, resolve_text_encoder

    with pytest.raises(SystemExit) as e:
        main(["train", "generate", "--help"])
    assert e.value.code == 0
    assert "--text-encoder" in capsys.readouterr().out
    assert resolve_text_encoder(GenerateRunConfig()) == {}                       # the model's own tower
    assert resolve_text_encoder(GenerateRunConfig(text_encoder="scratch"))["text_mode"] == "scratch"
    assert resolve_text_encoder(GenerateRunConfig(text_encoder="minilm"))["text_mode"] == "locked"
    with pytest.raises(VislangError, match="text encoder 'nope'"):
        resolve_text_encoder(GenerateRunConfig(text_encoder="nope"))


def test_validation_in_parts_adds_up_to_the_whole_split_at_the_noise_drawn_batch_by_batch(generate_run, data_root):
    """What torchrun's ranks compute (predict_val on contiguous parts, score_val on all) is the single-process
    number, and that number is the mean error at noise drawn from seed 0 a batch and a level at a time."""
    from vislang.data import load_dataset
    from vislang.data.images import load_image
    from vislang.tasks.base import load_trained
    from vislang.tasks.generate import GenerateTask, GenerateTaskConfig, text_context, to_model_range

    trained = load_trained(generate_run, "generate")
    model, tf = trained.model, trained.transform_cfg
    records = load_dataset(SHAPES, "val", root=data_root).records                     # 8 images
    cfg = GenerateTaskConfig(val_batch_size=3, val_noise_levels=2)
    task = GenerateTask(trained.artifacts, records, trained.transform, tf, cfg)
    whole = task.validate(model)["val_loss"]
    parts = task.predict_val(model, records[:5]) + task.predict_val(model, records[5:])
    assert task.score_val(records, parts)["val_loss"] == pytest.approx(whole, rel=1e-6)

    # the reference: batches of 3 (3, 3, 2), two levels each, one generator of seed 0 drawn in that order
    gen, scheduler, errors = torch.Generator().manual_seed(0), model.noise_scheduler("ddpm"), []
    total = scheduler.config.num_train_timesteps
    with torch.no_grad():
        for start in range(0, 8, 3):
            chunk = records[start:start + 3]
            x0 = to_model_range(torch.stack([trained.transform(load_image(r.image)) for r in chunk]), tf)
            context = text_context(model, trained.artifacts, [r.captions[0] for r in chunk], cfg.max_len)
            for level in (int(0.5 * total / 2), int(1.5 * total / 2)):
                noise = torch.randn(x0.shape, generator=gen)
                t = torch.full((len(x0),), level, dtype=torch.long)
                eps = model(scheduler.add_noise(x0, noise, t), t, context, ema=True)
                errors += (eps.float() - noise).pow(2).mean(dim=(1, 2, 3)).tolist()
    assert whole == pytest.approx(sum(errors) / len(errors), rel=1e-5)


def test_training_draws_are_per_sample_whatever_the_batch():
    from vislang.tasks.generate import sample_draws

    seeds = torch.tensor([11, 2**62 - 1, 5, 11])
    x0 = torch.zeros(4, 3, 8, 8)
    noise, t, drop = sample_draws({"seed": seeds}, x0, 1000, 0.5)
    assert noise.shape == x0.shape and t.shape == drop.shape == (4,)
    for i in range(4):  # each sample alone draws what it drew in the batch
        n1, t1, d1 = sample_draws({"seed": seeds[i:i + 1]}, x0[:1], 1000, 0.5)
        assert torch.equal(n1[0], noise[i]) and int(t1) == int(t[i]) and bool(d1) == bool(drop[i])
    assert torch.equal(noise[0], noise[3]) and not torch.equal(noise[0], noise[2])  # same seed, same draws
    assert int(t.min()) >= 0 and int(t.max()) < 1000
    # the drop rate is the asked fraction
    many = torch.arange(2000)
    drops = sample_draws({"seed": many}, torch.zeros(2000, 3, 1, 1), 1000, 0.1)[2]
    assert 0.08 < drops.float().mean().item() < 0.12
