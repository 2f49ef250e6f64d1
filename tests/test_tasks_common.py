"""The data section of run configs: from --set values to the image pipeline."""

from __future__ import annotations

import pytest

from vislang.config import resolve_config
from vislang.data.transforms import RandomGaussianBlur, RandomGrayscale, TransformConfig
from vislang.errors import VislangError
from vislang.tasks.caption import CaptionRunConfig
from vislang.tasks.common import transform_config


def test_augmentation_settings_reach_the_transform():
    cfg = resolve_config(CaptionRunConfig, None, ["data.transform.image_size=40", "data.transform.grayscale=0.25", "data.transform.blur=0.5",
                                                  "data.transform.jitter=0", "data.transform.crop_scale=[0.5,1.0]"])
    tf = transform_config(cfg.data)
    assert tf == TransformConfig(image_size=40, crop_scale=(0.5, 1.0), jitter=0.0, grayscale=0.25, blur=0.5)
    assert transform_config(resolve_config(CaptionRunConfig, None, []).data) == TransformConfig()  # defaults agree
    from vislang.data.transforms import build_transform

    kinds = [type(t) for t in build_transform(tf, train=True).transforms]
    assert RandomGrayscale in kinds and RandomGaussianBlur in kinds


@pytest.mark.parametrize("setting, message", [
    ("data.transform.grayscale=1.5", "data.transform.grayscale is a probability in [0, 1], got 1.5"),
    ("data.transform.blur=-0.1", "data.transform.blur is a probability in [0, 1], got -0.1"),
    ("data.transform.crop_scale=[0.9,0.5]", "data.transform.crop_scale must satisfy 0 < low <= high <= 1, got (0.9, 0.5)"),
])
def test_bad_augmentation_settings_are_named(setting, message):
    with pytest.raises(VislangError) as e:
        transform_config(resolve_config(CaptionRunConfig, None, [setting]).data)
    assert str(e.value) == message


def test_a_limited_split_still_names_the_manifest_line_of_a_missing_image(tmp_path):
    from vislang.errors import MissingImagesError
    from vislang.tasks.common import load_split

    (tmp_path / "m.jsonl").write_text('{"image": "gone.png", "text": "a cat"}\n{"image": "b.png", "text": "x"}\n')
    with pytest.raises(MissingImagesError, match=r"m\.jsonl: line 1: field 'image': .*gone\.png: file not found"):
        load_split(str(tmp_path / "m.jsonl"), None, limit=1)
