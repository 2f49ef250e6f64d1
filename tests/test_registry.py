"""Dataset registry: spec strings, idempotent builds, interrupted builds, load by name."""

from __future__ import annotations

import json

import pytest

from vislang.data import get_dataset_info, list_datasets, load_dataset, prepare_dataset
from vislang.data.registry import dataset_dir, parse_spec
from vislang.errors import DataError

SPEC = "shapes:n_train=6,n_val=2,n_test=2,size=24"


def test_parse_spec_types_and_defaults():
    name, opts = parse_spec("shapes:size=32,n_train=5")
    assert name == "shapes" and opts["size"] == 32 and opts["n_train"] == 5
    assert opts["seed"] == get_dataset_info("shapes").options["seed"]
    assert list_datasets("*moj*") == ["emoji"]


def test_option_sets_get_their_own_directory(tmp_path):
    a = dataset_dir("shapes", parse_spec("shapes")[1], tmp_path)
    b = dataset_dir("shapes", parse_spec("shapes:size=32")[1], tmp_path)
    assert a == tmp_path / "shapes" and b.name.startswith("shapes-") and a != b


def test_prepare_is_idempotent_and_resumes_interrupted_builds(tmp_path):
    out = prepare_dataset(SPEC, tmp_path)
    summary = out / "summary.json"
    manifest = out / "train.jsonl"
    stamp, content = summary.stat().st_mtime_ns, manifest.read_bytes()
    assert prepare_dataset(SPEC, tmp_path) == out
    assert summary.stat().st_mtime_ns == stamp  # nothing rebuilt
    summary.unlink()  # as if the build had been killed before finishing
    prepare_dataset(SPEC, tmp_path)
    assert summary.exists() and manifest.read_bytes() == content
    prepare_dataset(SPEC, tmp_path, force=True)
    assert manifest.read_bytes() == content  # deterministic rebuild


def test_a_build_made_before_an_option_existed_is_kept_at_its_default(tmp_path):
    out = prepare_dataset(SPEC, tmp_path)
    summary = out / "summary.json"
    done = json.loads(summary.read_text(encoding="utf-8"))
    del done["options"]["seed"]  # as written by a version without that option
    summary.write_text(json.dumps(done), encoding="utf-8")
    stamp = summary.stat().st_mtime_ns
    assert prepare_dataset(SPEC, tmp_path) == out and summary.stat().st_mtime_ns == stamp
    done["options"]["seed"] = 123  # a build with another value is not the requested one
    summary.write_text(json.dumps(done), encoding="utf-8")
    prepare_dataset(SPEC, tmp_path)
    assert json.loads(summary.read_text(encoding="utf-8"))["options"]["seed"] == parse_spec(SPEC)[1]["seed"]


def test_load_by_name_reads_the_manifest_back(tmp_path):
    train = load_dataset(SPEC, "train", root=tmp_path)
    assert len(train) == 6 and train.split == "train"
    r = train[0]
    assert r.image.endswith(".png") and r.captions and r.qa and r.label is not None
    assert train.check_images() is train
    with pytest.raises(DataError, match="has no split 'dev'"):
        load_dataset(SPEC, "dev", root=tmp_path)


def test_env_var_sets_the_root(tmp_path, monkeypatch):
    monkeypatch.setenv("VISLANG_DATA", str(tmp_path / "envroot"))
    out = prepare_dataset(SPEC)
    assert out.parent == tmp_path / "envroot"
