"""The data section of run configs: from --set values to the image pipeline."""

from __future__ import annotations

from vislang.config import resolve_config
from vislang.data.transforms import RandomGaussianBlur, RandomGrayscale, TransformConfig
from vislang.tasks.caption import CaptionRunConfig
from vislang.tasks.common import transform_config


def test_augmentation_settings_reach_the_transform():
    cfg = resolve_config(CaptionRunConfig, None, ["data.image_size=40", "data.grayscale=0.25", "data.blur=0.5",
                                                  "data.jitter=0", "data.crop_scale=[0.5,1.0]"])
    tf = transform_config(cfg.data)
    assert tf == TransformConfig(image_size=40, crop_scale=(0.5, 1.0), jitter=0.0, grayscale=0.25, blur=0.5)
    assert transform_config(resolve_config(CaptionRunConfig, None, []).data) == TransformConfig()  # defaults agree
    from vislang.data.transforms import build_transform

    kinds = [type(t) for t in build_transform(tf, train=True).transforms]
    assert RandomGrayscale in kinds and RandomGaussianBlur in kinds
