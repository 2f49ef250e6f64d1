"""Acceptance test of the generic path: a task defined entirely in this file (its TaskSpec, model, objective,
evaluation and predictor, nothing in vislang/) is trained with ``vislang.tasks.train`` and ``vislang train``,
evaluated with ``vislang evaluate``, and opened with ``vislang.load`` as its own predictor."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

import vislang
from vislang.cli import main
from vislang.data.loader import ImageTextSamples
from vislang.data.transforms import TransformConfig
from vislang.errors import VislangError
from vislang.inference.base import Predictor
from vislang.inference.caption import CaptionPredictor
from vislang.models import create_model, register_model
from vislang.models.registry import MODELS
from vislang.tasks import TASKS, TaskSpec, TrainData, load_trained, register_task, train
from vislang.tasks import base as task_base
from vislang.tasks.base import add_split_args, eval_dir
from vislang.tasks.common import DataConfig, load_split
from vislang.tasks.common import open_split as base_open_split
from vislang.train import TrainConfig

pytestmark = pytest.mark.usefixtures("single_torch_thread")

TASK = "toy_shapes"
MODEL = "tests_toy_shape_net"
SHAPES = "shapes:n_train=40,n_val=8,n_test=8,size=32"
CLASSES_FILE = "classes.json"


class ToyNet(nn.Module):
    """``(B, 3, H, W)`` -> ``(B, C)``: one strided conv, average pooling, a linear head."""

    def __init__(self, n_classes: int = 2, width: int = 4):
        super().__init__()
        self.image_encoder = nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1), nn.ReLU(),
                                           nn.AdaptiveAvgPool2d(2), nn.Flatten())      # (B, 4 * width)
        self.head = nn.Linear(4 * width, n_classes)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.image_encoder(images))                                    # (B, C)


def build_toy_net(**kwargs: Any) -> nn.Module:
    """A one-conv shape classifier for the toy task of the tests."""
    return ToyNet(**kwargs)


@dataclass
class ToyTaskConfig:
    note: str = "large object"


@dataclass
class ToyRunConfig:
    model: str = MODEL
    model_kwargs: dict[str, Any] = field(default_factory=lambda: {"width": 4})
    data: DataConfig = field(default_factory=lambda: DataConfig(
        name=SHAPES, transform=TransformConfig(image_size=32, augment=False)))
    task: ToyTaskConfig = field(default_factory=ToyTaskConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=2, batch_size=8, log_every=1))


def accuracy(model: nn.Module, records, classes: list[str], transform) -> float:
    """Share of ``records`` whose label is the model's top class."""
    samples = ImageTextSamples(records, transform, unit="image")
    images = torch.stack([samples[i]["image"] for i in range(len(samples))])           # (N, 3, S, S)
    targets = torch.tensor([classes.index(r.label) for r in records])                   # (N,)
    with torch.no_grad():
        return (model(images).argmax(-1) == targets).float().mean().item()


class ToyObjective:
    monitor = "accuracy"
    mode = "max"

    def __init__(self, classes: list[str], val_records, transform):
        self.classes, self.val_records, self.transform = classes, val_records, transform

    def training_step(self, model: nn.Module, batch: dict) -> dict[str, Tensor]:
        target = torch.tensor([self.classes.index(x) for x in batch["label"]], device=batch["image"].device)
        return {"loss": F.cross_entropy(model(batch["image"]), target)}

    def validate(self, model: nn.Module) -> dict[str, float]:
        return {"accuracy": accuracy(model, self.val_records, self.classes, self.transform)}

    def save_artifacts(self, directory: Path) -> None:
        (Path(directory) / CLASSES_FILE).write_text(json.dumps(self.classes))


class ToyShapes(TaskSpec):
    """Name the shape of the large object of a shapes image (a task defined by a test)."""

    config = ToyRunConfig
    help = "toy task of the tests: the shape of the large object"
    monitor_label = "toy accuracy"
    predictor = f"{__name__}:ToyPredictor"
    evaluation = __name__            # this module's add_evaluate_args / run_evaluate: `vislang evaluate toy_shapes`
    evaluate_help = "score a toy run on a split"

    def prepare(self, cfg: ToyRunConfig, data: TrainData, reuse: Path | None) -> list[str]:
        if reuse is not None and (reuse / CLASSES_FILE).exists():
            return json.loads((reuse / CLASSES_FILE).read_text())
        return sorted({r.label for r in data.train})

    def model_options(self, cfg: ToyRunConfig, classes: list[str], data: TrainData) -> dict[str, Any]:
        return {**cfg.model_kwargs, "n_classes": len(classes)}

    def samples(self, cfg: ToyRunConfig, data: TrainData, classes: list[str], transform) -> ImageTextSamples:
        return ImageTextSamples(data.train, transform, unit="image")

    def objective(self, cfg, model, data: TrainData, classes: list[str], transform) -> ToyObjective:
        return ToyObjective(classes, data.val, transform)

    def extra(self, cfg: ToyRunConfig, classes: list[str]) -> dict[str, Any]:
        return {"note": cfg.task.note}

    def load_artifacts(self, folder: Path, config: dict[str, Any]) -> list[str]:
        return json.loads((folder / CLASSES_FILE).read_text())



class ToyPredictor(Predictor):
    """The shape of the large object of each image."""

    task = TASK

    @torch.inference_mode()
    def classify(self, images) -> list[str]:
        return [self.trained.artifacts[i] for i in self.model(self.images_tensor(images)).argmax(-1).tolist()]


def add_evaluate_args(parser) -> None:
    """The options of ``vislang evaluate toy_shapes``."""
    add_split_args(parser, TASK, "dataset name or manifest", "folder of the images")
    parser.add_argument("--out", type=Path)


def run_evaluate(args) -> int:
    """Score a toy run's accuracy on a split; writes ``scores.json``."""
    trained = load_trained(args.model, TASK, device="cpu")
    records = load_split(args.data, args.split, root=args.root, image_root=args.image_root).records
    score = accuracy(trained.model, records, trained.artifacts, trained.transform)
    out = eval_dir(args)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scores.json").write_text(json.dumps({"accuracy": score, "n": len(records)}))
    print(f"toy accuracy {score:.4f} on {len(records)} images; written to {out / 'scores.json'}")
    return 0


@pytest.fixture(scope="module")
def toy() -> Iterator[type[ToyShapes]]:
    """The toy model and task, registered for this module's tests only."""
    register_model(MODEL)(build_toy_net)
    register_task(TASK)(ToyShapes)
    try:
        yield ToyShapes
    finally:
        TASKS.remove(TASK)
        MODELS.remove(MODEL)
    assert TASK not in TASKS and MODEL not in MODELS


@pytest.fixture(scope="module")
def toy_run(toy, data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("toy") / "run"
    result = train(TASK, None, run, overrides=[f"data.root={data_root}", "train.seed=3"])
    assert (result.steps, result.stopped) == (10, "completed") and result.best_metric is not None
    return run


def test_generic_train_writes_a_model_folder(toy_run: Path):
    best = toy_run / "checkpoints" / "best"
    config = json.loads((best / "config.json").read_text())
    assert config["task"] == TASK and config["model"] == MODEL and config["note"] == "large object"
    classes = json.loads((best / CLASSES_FILE).read_text())
    assert classes == ["circle", "diamond", "square", "triangle"]
    assert config["model_config"] == {"width": 4, "n_classes": 4}
    assert json.loads((best / "preprocessor.json").read_text())["image_size"] == 32
    card = (best / "README.md").read_text()
    assert card.startswith("---") and TASK in card and MODEL in card
    assert "seed: 3" in (toy_run / "config.yaml").read_text()
    log = [json.loads(x) for x in (toy_run / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if e["kind"] == "val"] == [5, 10]


def test_the_cli_trains_the_registered_task_the_same_way(toy_run: Path, data_root: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture):
    run = tmp_path / "cli"
    assert main(["train", TASK, "--root", str(data_root), "--seed", "3", "--out", str(run)]) == 0
    assert "best toy accuracy on val" in capsys.readouterr().out
    for ckpt in ("best", "last"):     # same seed, same task: the same weights
        a = load_file(str(toy_run / "checkpoints" / ckpt / "model.safetensors"))
        b = load_file(str(run / "checkpoints" / ckpt / "model.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), ckpt


def test_evaluate_command_of_the_registered_task(toy_run: Path, data_root: Path, capsys: pytest.CaptureFixture):
    assert main(["evaluate", TASK, "--model", str(toy_run), "--data", SHAPES, "--split", "val",
                 "--root", str(data_root)]) == 0
    assert "toy accuracy" in capsys.readouterr().out
    [written] = (toy_run / "eval").glob("*_val/scores.json")              # <run>/eval/<data>_<split>
    scores = json.loads(written.read_text())
    config = json.loads((toy_run / "checkpoints" / "best" / "config.json").read_text())
    assert scores["n"] == 8 and scores["accuracy"] == config["best_metric"]  # the best folder scores its metric


def test_vislang_load_returns_the_tasks_predictor(toy_run: Path, data_root: Path):
    predictor = vislang.load(toy_run, device="cpu")
    assert type(predictor).__name__ == "ToyPredictor" and predictor.config["task"] == TASK
    assert predictor.checkpoint == toy_run / "checkpoints" / "best" and not predictor.model.training
    records = load_split(SHAPES, "val", root=str(data_root)).records
    got = predictor.classify([r.image for r in records])
    trained = load_trained(toy_run, TASK, which="best", device="cpu")
    want = [trained.artifacts[i] for i in trained.model(predictor.images_tensor([r.image for r in records]))
            .argmax(-1).tolist()]
    assert got == want and set(got) <= set(trained.artifacts)
    last = type(predictor).load(toy_run, checkpoint="last", device="cpu")
    assert last.checkpoint == toy_run / "checkpoints" / "last"
    with pytest.raises(VislangError, match=f"not a caption model \\(task: '{TASK}'\\)"):
        CaptionPredictor.load(toy_run)
    rebuilt = create_model(MODEL, **trained.config["model_config"])       # the public registry rebuilds it
    assert isinstance(rebuilt, ToyNet) and rebuilt.head.out_features == 4


def test_a_run_validates_on_two_splits_and_keeps_the_best_mean(toy, data_root: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture,
                                                               monkeypatch: pytest.MonkeyPatch):
    run = tmp_path / "two"
    opened = []
    def open_split(cfg, split, limit=None):  # the real reader, watched: each split is read once
        opened.append(split)
        return base_open_split(cfg, split, limit)
    monkeypatch.setattr(task_base, "open_split", open_split)
    assert main(["train", TASK, "--root", str(data_root), "--seed", "3", "--out", str(run),
                 "--set", "data.val_split=val+test"]) == 0
    assert opened == ["train", "val", "test"]
    assert "best toy accuracy on the mean over val and test" in capsys.readouterr().out
    vals = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if '"val"' in x]
    for e in vals:  # each split scored on its own records; the monitored value is their mean
        assert e["accuracy"] == pytest.approx((e["val/accuracy"] + e["test/accuracy"]) / 2)
    trained = load_trained(run, TASK, device="cpu")
    records = {s: load_split(SHAPES, s, root=str(data_root)).records for s in ("val", "test")}
    best = max(vals, key=lambda e: e["accuracy"])
    for split, recs in records.items():
        assert accuracy(trained.model, recs, trained.artifacts, trained.transform) == best[f"{split}/accuracy"]
    with pytest.raises(VislangError, match="name each validation split once"):
        train(TASK, None, tmp_path / "bad", overrides=[f"data.root={data_root}", "data.val_split=val+val"])
