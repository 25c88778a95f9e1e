"""Checks every job config shares: one precision vocabulary (`dva.precision`) and crops at the model's size, with
errors that name the job's own key."""

from __future__ import annotations

import pytest
import torch

from dva.errors import ConfigError
from dva.evaluation.config import load_eval_config
from dva.pipeline.config import EditJobConfig
from dva.precision import autocast_dtype
from dva.runtime.config import load_job_config
from dva.train.classifier_job import load_train_classifier_config
from dva.train.config import load_preprocess_config, load_train_config


def edit(tmp_path, *overrides):
    return load_job_config(EditJobConfig, "local_tiny", ["random_weights=true", f"input={tmp_path}",
                                                         f"output={tmp_path / 'out'}", *overrides])


def train(tmp_path, *overrides):
    return load_train_config("tiny_cpu", [f"data.path={tmp_path}", f"storage_path={tmp_path / 'ckpt'}", *overrides])


def evaluation(tmp_path, *overrides):
    return load_eval_config("local_tiny", ["random_weights=true", f"input={tmp_path}", f"output={tmp_path / 'out'}",
                                           *overrides])


def preprocess(tmp_path, *overrides):
    return load_preprocess_config("local_tiny", [f"input={tmp_path}", f"output={tmp_path / 'out'}", *overrides])


def classifier(tmp_path, *overrides):
    return load_train_classifier_config("local_tiny", [f"images={tmp_path}", f"annotations={tmp_path / 'a.txt'}",
                                                       f"output={tmp_path / 'c.safetensors'}", *overrides])


def test_each_precision_means_one_autocast_dtype():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert autocast_dtype("auto", cpu) is None and autocast_dtype("auto", cuda) == torch.bfloat16
    assert autocast_dtype("fp32", cuda) is None and autocast_dtype("bf16", cpu) == torch.bfloat16
    assert autocast_dtype("fp16", cuda) == torch.float16


ALL = "auto, fp32, bf16, fp16"


@pytest.mark.parametrize("load,key,allowed", [
    (edit, "precision", ALL),
    (evaluation, "precision", ALL),
    (train, "optim.amp", ALL),
    (edit, "clip_edit.precision", "fp32, bf16"),  # fp16 would need a gradient scaler; auto depends on the device
])
def test_every_precision_key_validates_through_one_vocabulary_and_names_itself(tmp_path, load, key, allowed):
    assert load(tmp_path, f"{key}=bf16") is not None
    with pytest.raises(ConfigError, match=rf"config key `{key}`: 'fp8' is not one of {allowed}$"):
        load(tmp_path, f"{key}=fp8")


@pytest.mark.parametrize("load", [edit, evaluation, preprocess, classifier])
def test_every_job_with_a_front_end_needs_crops_at_the_model_size(tmp_path, load):
    with pytest.raises(ConfigError, match=r"config key `face\.align\.crop_size`: 48 must equal the model's "
                                          r"`model\.unet\.image_size` \(32\)"):
        load(tmp_path, "model_preset=tiny", "face.align.crop_size=48")


def test_aligned_classifier_images_and_edit_mode_evaluation_need_no_crop_size(tmp_path):
    assert classifier(tmp_path, "model_preset=tiny", "face.align.crop_size=48", "aligned=true").aligned
    assert evaluation(tmp_path, "model_preset=tiny", "face.align.crop_size=48", "mode=edit").mode == "edit"


# A nested block's own checks run on load, inside every job, and name the full key.
NESTED = [
    ("face.track.max_gap=0", r"config key `face\.track\.max_gap` must be at least 1"),
    ("face.mask.paste_mode=blend", r"config key `face\.mask\.paste_mode`: 'blend' is not one of feather, square"),
    ("model.unet.dropout=1.5", r"config key `model\.unet\.dropout`: 1\.5 is not in \[0, 1\)"),
    ("model.unet.model_channels=33", r"config key `model\.unet\.model_channels`: must be even"),
    ("frontend.num_cpus=-1", r"config key `frontend\.num_cpus`: -1\.0 must be a finite number ≥ 0"),
]


@pytest.mark.parametrize("load,override,message", [
    *[(job, o, m) for job in (edit, evaluation, preprocess, classifier) for o, m in NESTED[:4]],
    *[(job, NESTED[4][0], NESTED[4][1]) for job in (edit, preprocess)],
    (train, *NESTED[2]), (train, *NESTED[3]),
    (train, "optim.ema_decay=1", r"config key `optim\.ema_decay`: 1\.0 is not in \[0, 1\)"),
    (edit, "clip_edit.lr=0", r"config key `clip_edit\.lr`: 0\.0 must be positive"),
    (edit, "clip_edit.inversion.iterations=0", r"config key `clip_edit\.inversion\.iterations`: 0 must be at least 1"),
    (edit, "generate.compile_mode=fast", r"config key `generate\.compile_mode`: 'fast' is not one of"),
    (evaluation, "methods=[ddim,edict]", r"config key `methods\[1\]\.method`: 'edict' is not one of"),
])
def test_a_bad_nested_value_fails_at_load_naming_its_full_key(tmp_path, load, override, message):
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, override)


def test_each_block_is_validated_once_children_first(tmp_path, monkeypatch):
    """Every config block's `validate(key)` runs once per load, with its dotted key, the blocks inside a block before
    the block itself (whose cross-block checks then see valid children)."""
    from dva.diffusion.inversion import InversionConfig
    from dva.face.config import FaceConfig
    from dva.models.config import ModelConfig

    keys = []
    for block in (EditJobConfig, FaceConfig, ModelConfig, InversionConfig):
        def recorded(self, key, own=block.validate):
            keys.append(key)
            own(self, key)
        monkeypatch.setattr(block, "validate", recorded)
    edit(tmp_path)
    assert sorted(keys) == ["", "clip_edit.inversion", "face", "inversion", "model"] and keys[-1] == ""
