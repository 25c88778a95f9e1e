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
