"""Every preset in configs/ builds what its job builds, with stand-in weight files in the released formats.

Found by globbing configs/, so a new preset (or a new group, which then needs a builder here) is covered without
editing this file. Only the UNet is shrunk, through overrides, as a user would override any key; the encoders, face
back ends and stages are built exactly as configured.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dva.config import CONFIG_DIR
from standin_weights import StandIns

PRESETS = sorted(CONFIG_DIR.glob("*/*.yaml"))
# A small UNet at the preset's own image size: crop sizes and every other key stay as configured.
SMALL_UNET = ["unet.model_channels=32", "unet.channel_mult=[1,1,1,1,1,1]", "unet.num_res_blocks=1"]


@pytest.fixture(scope="session")
def standins(tmp_path_factory) -> StandIns:
    return StandIns(tmp_path_factory.mktemp("standin_weights"))


def resolve(load, name: str, standins: StandIns, overrides: list[str]):
    """`load(name, overrides)` once to learn what the preset names, then again with its stand-in files (and, on a
    machine without CUDA, its face back end on the CPU)."""
    first = load(name, overrides)
    return load(name, overrides + standins.overrides(first) + _face_on_cpu(first))


def _face_on_cpu(cfg) -> list[str]:
    from dva.face.config import FaceConfig

    face, prefix = (cfg, "") if isinstance(cfg, FaceConfig) else (getattr(cfg, "face", None), "face.")
    backend = getattr(face, face.backend, None) if face is not None else None
    if getattr(backend, "device", "cpu") == "cpu" or torch.cuda.is_available():
        return []
    return [f"{prefix}{face.backend}.device=cpu"]


def _small_model(prefix: str, preset: str) -> list[str]:
    from dva.config import load_config
    from dva.models.config import ModelConfig

    levels = len(load_config(ModelConfig, preset, group="model").unet.channel_mult)
    small = [o.replace("[1,1,1,1,1,1]", "[" + ",".join(["1"] * levels) + "]") for o in SMALL_UNET]
    return [prefix + o for o in small]


def _job_overrides(group: str, name: str, **keys: str) -> list[str]:
    """The shrunk UNet of the job's model preset, plus the required keys (input, output...)."""
    from omegaconf import OmegaConf

    preset = OmegaConf.load(CONFIG_DIR / group / f"{name}.yaml").get("model_preset", "dva256")
    return _small_model("model.", preset) + [f"{k}={v}" for k, v in keys.items()]


def _encodes(model) -> None:
    crops = torch.rand(1, 3, model.image_size, model.image_size) * 2 - 1
    z_face = model.face_code(model.encode_identity(crops), model.encode_landmarks(crops))
    assert z_face.shape == (1, model.cfg.z_face_dim) and torch.isfinite(z_face).all()
    if model.unet is not None:
        eps = model(crops, torch.tensor([500]), z_face)
        assert eps.shape == crops.shape


def _detects(landmarker) -> None:
    assert isinstance(landmarker.detect(np.full((120, 160, 3), 127, np.uint8)), list)


def build_model(name, standins, tmp_path):
    from dva.config import load_config
    from dva.runtime.weights import load_model
    from dva.models.config import ModelConfig

    cfg = resolve(lambda n, o: load_config(ModelConfig, n, o, group="model"), name, standins, _small_model("", name))
    _encodes(load_model(cfg))


def build_face(name, standins, tmp_path):
    from dva.face import build_landmarker, load_face_config

    _detects(build_landmarker(resolve(load_face_config, name, standins, [])))


def build_edit(name, standins, tmp_path):
    from dva.editing.edits import parse_edit
    from dva.pipeline.config import EditJobConfig
    from dva.runtime.config import load_job_config
    from dva.pipeline.stages import GenerateStage, PrepareStage, latent_key

    cfg = resolve(lambda n, o: load_job_config(EditJobConfig, n, o), name, standins,
                  _job_overrides("edit", name, random_weights="true", input=str(tmp_path / "in"),
                                 output=str(tmp_path / "out")))
    clip_edits = any(parse_edit(e).kind == "clip" for e in cfg.edits)
    prepare = PrepareStage(cfg, latent_key(cfg), clip_edits=clip_edits)
    _encodes(prepare.model)
    _detects(prepare.landmarker)
    _encodes(GenerateStage(cfg).model)


def build_edit_methods(name, standins, tmp_path):
    from dva.editing.clip_direction import load_clip, load_clip_edit_config

    cfg = resolve(load_clip_edit_config, name, standins, [])
    loss = load_clip(cfg.clip, cfg.templates)
    assert loss.image_features(torch.rand(1, 3, 64, 64) * 2 - 1).shape[0] == 1


def build_preprocess(name, standins, tmp_path):
    from dva.train.config import load_preprocess_config
    from dva.train.preprocess import PreprocessStage

    cfg = resolve(load_preprocess_config, name, standins,
                  _job_overrides("preprocess", name, input=str(tmp_path / "in"), output=str(tmp_path / "out")))
    stage = PreprocessStage(cfg)
    _encodes(stage.model)
    _detects(stage.landmarker)


def build_train(name, standins, tmp_path):
    from dva.runtime.weights import load_model
    from dva.train.config import load_train_config
    from dva.train.loop import create_train_state

    cfg = resolve(load_train_config, name, standins,
                  _job_overrides("train", name, **{"data.path": str(tmp_path / "data"),
                                                  "storage_path": str(tmp_path / "runs")}))
    model = load_model(cfg.model)
    create_train_state(model, cfg.optim)
    _encodes(model)


def build_eval(name, standins, tmp_path):
    from dva.evaluation.config import load_eval_config
    from dva.evaluation.consistency import build_identity_embedder
    from dva.evaluation.reconstruction import LpipsScorer
    from dva.face import build_landmarker
    from dva.runtime.weights import load_model

    cfg = resolve(load_eval_config, name, standins,
                  _job_overrides("eval", name, random_weights="true", input=str(tmp_path / "in"),
                                 output=str(tmp_path / "out")))
    _encodes(load_model(cfg.model))
    _detects(build_landmarker(cfg.face))
    size = cfg.crop_size_for_identity
    embed = build_identity_embedder(cfg.identity, torch.device("cpu"))
    assert embed(torch.rand(1, 3, size, size) * 2 - 1).shape == (1, cfg.identity.dim)
    LpipsScorer(cfg.lpips_weights, torch.device("cpu"))


def build_train_classifier(name, standins, tmp_path):
    from dva.train.classifier_job import load_train_classifier_config
    from dva.face import build_landmarker
    from dva.runtime.weights import load_model

    cfg = resolve(load_train_classifier_config, name, standins,
                  _job_overrides("train_classifier", name, images=str(tmp_path / "images"),
                                 annotations=str(tmp_path / "list_attr_celeba.txt"),
                                 output=str(tmp_path / "clf.safetensors")))
    _encodes(load_model(cfg.model))
    if not cfg.aligned:
        _detects(build_landmarker(cfg.face))


BUILDERS = {
    "model": build_model, "face": build_face, "edit": build_edit, "edit_methods": build_edit_methods,
    "preprocess": build_preprocess, "train": build_train, "eval": build_eval,
    "train_classifier": build_train_classifier,
}


def test_every_config_group_has_a_builder():
    assert {p.parent.name for p in PRESETS} <= set(BUILDERS)


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_preset_builds(path: Path, standins, tmp_path):
    BUILDERS[path.parent.name](path.stem, standins, tmp_path)


# The presets the cluster specs (cluster/) run in the image, which has no dlib.
CLUSTER_PRESETS = ["edit/cluster_gpu", "preprocess/cluster", "train/dva256_8gpu", "eval/gpu", "train_classifier/gpu",
                   "model/dva256", "face/fan_tracked"]


@pytest.mark.slow
def test_cluster_presets_build_without_dlib(tmp_path):
    """The same builds in a fresh interpreter where dlib and its model package cannot be imported."""
    import os
    import subprocess
    import sys

    from no_dlib import without_dlib_folder

    tests = Path(__file__).resolve().parents[1]
    site = without_dlib_folder(tmp_path / "nodlib")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(tests.parent), os.environ.get("PYTHONPATH", "")])}
    ids = [f"{__file__}::test_preset_builds[{name}]" for name in CLUSTER_PRESETS]
    probe = subprocess.run([sys.executable, "-c", "import dlib"], env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "hidden" in probe.stderr
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *ids], env=env,
                         capture_output=True, text=True, timeout=1200, cwd=tests.parent)
    assert run.returncode == 0 and f"{len(ids)} passed" in run.stdout, run.stdout[-3000:] + run.stderr[-2000:]
