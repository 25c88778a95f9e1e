"""The laptop demo (`make demo`): sample face clips → the Ray edit job → evaluation → an HTML page with the results.

    python -m dva.demo                 # everything, into out/demo/
    python -m dva.demo train --steps 800 --out checkpoints/demo64.safetensors   # remake the shipped model

It runs offline on CPUs: the clips are animated from two real photos that ship with scikit-image and matplotlib,
detection, landmarks and identity come from dlib's pretrained models, and the model is the small `demo64` config.
The repo ships a demo checkpoint made by the `train` command above; without it the demo trains one for a bounded
time first (the edits are then weaker: a few minutes of CPU training barely teaches the model to use z_id).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from dva.config import load_config
from dva.face import build_landmarker, landmark_hull_mask, load_face_config
from dva.face.crop_video import align_video
from dva.face.warp import iter_crops
from dva.models.autoencoder import DiffusionVideoAutoencoder
from dva.models.checkpoint import save_checkpoint
from dva.models.config import ModelConfig
from dva.pipeline.config import EditJobConfig
from dva.runtime.cli import command_parser, exit_process, run_command
from dva.runtime.config import load_job_config
from dva.pipeline.edit_job import print_summary, run_edit_job
from dva.crops import crops_to_tensor
from dva.samples import make_sample_clip
from dva.train.loop import OptimConfig, create_train_state, train_step
from dva.video import iter_frames

REPO = Path(__file__).resolve().parent.parent
SHIPPED_CHECKPOINT = REPO / "checkpoints" / "demo64.safetensors"
MODEL_PRESET = "demo64"
JOB_PRESET = "demo"
FRAMES, SIZE = 32, (384, 288)


def make_samples(folder: Path) -> dict[str, str]:
    """The demo clips: each person with head motion, blinks, a moving background and audio; a portrait clip."""
    folder.mkdir(parents=True, exist_ok=True)
    common = dict(frames=FRAMES, size=SIZE, blinks=True)
    return {
        "astronaut": make_sample_clip(folder / "astronaut.mp4", "astronaut", audio=True, **common),
        "grace_hopper": make_sample_clip(folder / "grace_hopper.mp4", "grace_hopper", audio=True, seed=1, **common),
        "astronaut_portrait": make_sample_clip(folder / "astronaut_portrait.mp4", "astronaut", rotation=90, seed=2,
                                               motion=0.6, frames=FRAMES, size=SIZE),
    }


def training_set(clips: list[str], model: DiffusionVideoAutoencoder) -> dict[str, torch.Tensor]:
    """Aligned crops of every frame with their z_id, z_lnd and face mask (the landmark hull), held in memory."""
    size = model.image_size
    face = load_face_config("dlib", [f"align.crop_size={size}"])
    landmarker = build_landmarker(face)
    images, masks = [], []
    for clip in tqdm(clips, desc="training crops", unit="clip"):
        track = align_video(clip, landmarker, face)
        for i, crop in enumerate(iter_crops(iter_frames(clip), track.quads, size)):
            images.append(crop)
            masks.append(landmark_hull_mask(track.crop_points(i), size, face.mask.brow_lift))
    x = crops_to_tensor(np.stack(images))
    return {"images": x, "z_id": model.encode_identity(x), "z_lnd": model.encode_landmarks(x),
            "mask": torch.from_numpy(np.stack(masks)).float()[:, None]}


def train_demo_model(clips: list[str], out: Path, steps: int, seconds: float | None = None, batch: int = 8,
                     seed: int = 0) -> Path:
    """Train `demo64` on the clips' frames (single process) for `steps` or `seconds`; save the EMA weights."""
    torch.manual_seed(seed)
    model = DiffusionVideoAutoencoder(load_config(ModelConfig, MODEL_PRESET, group="model"))
    data = training_set(clips, model)
    state = create_train_state(model, OptimConfig(lr=5e-4, ema_decay=0.995))
    gen = torch.Generator().manual_seed(seed)
    started = time.time()
    bar = tqdm(range(steps), desc="training demo64", unit="step")
    for _ in bar:
        idx = torch.randint(0, len(data["images"]), (batch,), generator=gen)
        metrics = train_step(state, {k: v[idx] for k, v in data.items()}, gen)
        bar.set_postfix(loss=f"{metrics['loss']:.3f}")
        if seconds is not None and time.time() - started > seconds:
            break
    bar.close()
    return save_checkpoint(out, model, state.ema.state_dict())


def edit_manifest(samples: dict[str, str], folder: Path) -> Path:
    """Per-video edits: a reconstruction of each clip and an identity swap between the two people."""
    swaps = {"astronaut": "grace_hopper", "grace_hopper": "astronaut", "astronaut_portrait": "grace_hopper"}
    path = folder / "manifest.jsonl"
    with open(path, "w") as f:
        for name, clip in samples.items():
            edits = ["reconstruct", f"identity:{samples[swaps[name]]}"]
            f.write(json.dumps({"uri": Path(clip).name, "edits": edits}) + "\n")
    return path


def run_demo(out: Path, checkpoint: Path | None, train_seconds: float) -> int:
    started = time.time()
    samples = make_samples(out / "samples")
    if checkpoint is None or not checkpoint.is_file():
        print(f"[demo] no demo checkpoint at {checkpoint}; training one for {train_seconds:.0f} s")
        checkpoint = train_demo_model(list(samples.values()), out / "model" / "demo64.safetensors", steps=10**9,
                                      seconds=train_seconds)
    cfg = load_job_config(EditJobConfig, JOB_PRESET, [
        f"input={edit_manifest(samples, out / 'samples')}", f"output={out / 'edit'}",
        f"model.checkpoint={checkpoint}"])
    summary = run_edit_job(cfg)
    print_summary(summary, cfg.output)
    from dva.evaluation.config import load_eval_config
    from dva.evaluation.job import run_eval
    from dva.report import write_edit_report

    # TL-ID / TG-ID / flicker of every edit with dlib's identity descriptor: the numbers next to the paper's.
    summary_uri = run_eval(load_eval_config("local_tiny", ["mode=edit", f"input={cfg.output}"]))
    page = write_edit_report(cfg.output, eval_summary=summary_uri)
    print(f"[demo] finished in {time.time() - started:.0f} s. Open the results page:\n    {page}")
    return summary.exit_code


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("python -m dva.demo", __doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    train = sub.add_parser("train", help="(re)make the demo checkpoint")
    train.add_argument("--steps", type=int, default=800)
    train.add_argument("--out", type=Path, default=SHIPPED_CHECKPOINT)
    train.add_argument("--samples", type=Path, default=Path("out/demo/samples"))
    parser.add_argument("--out", type=Path, default=Path("out/demo"))
    parser.add_argument("--checkpoint", type=Path, default=SHIPPED_CHECKPOINT)
    parser.add_argument("--train-seconds", type=float, default=240.0,
                        help="training budget when no demo checkpoint exists")

    def run(args) -> int:
        if args.command == "train":
            path = train_demo_model(list(make_samples(args.samples).values()), args.out, steps=args.steps)
            print(f"[demo] wrote {path}")
            return 0
        return run_demo(args.out, args.checkpoint, args.train_seconds)

    return run_command(parser, argv, run)


if __name__ == "__main__":
    exit_process(main)
