"""`dva check` / `--dry-run`: every problem a job would hit is listed before any work starts, each naming its
config key or input; a passing check prints the plan. No test starts Ray."""

from __future__ import annotations

import os
import shutil

import pytest

from dva.cli import main as dva
from dva.preflight import gpu_rates
from dva.runtime.cli import EXIT_CHECK_FAILED, EXIT_USAGE

TINY = ["--config", "local_tiny"]
TINY_RANDOM = [*TINY, "random_weights=true"]  # no checkpoint: a UNet with random weights, asked for explicitly


def run(capsys, *argv) -> tuple[int, str, str]:
    code = dva(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def failures(out: str) -> list[str]:
    """The lines of the closing list of failed checks."""
    tail = out.split("check(s) failed", 1)
    return [line.strip() for line in tail[1].splitlines()[1:]] if len(tail) == 2 else []


def checks(out: str) -> dict[str, tuple[str, str]]:
    """{key: (status, detail)} of the check lines."""
    section = out.split("--- checks ---\n", 1)[1].split("\n---", 1)[0]
    rows = (line.split(maxsplit=2) for line in section.splitlines())
    return {key: (status, detail) for status, key, detail in rows}


@pytest.fixture
def two_clips(tmp_path, sample_clip):
    folder = tmp_path / "in"
    folder.mkdir()
    for name, person in (("a.mp4", "astronaut"), ("b.mp4", "grace_hopper")):
        shutil.copy(sample_clip(person, frames=12), folder / name)
    return folder


@pytest.fixture(autouse=True)
def no_ray():
    yield
    ray = pytest.importorskip("ray")
    assert not ray.is_initialized(), "a pre-flight check must not start or join Ray"


def test_missing_weight_files_are_all_listed_with_their_config_keys(capsys, two_clips, tmp_path):
    code, out, _ = run(capsys, "check", "edit", *TINY, f"input={two_clips}", f"output={tmp_path / 'out'}",
                       f"model.checkpoint={tmp_path / 'gone' / 'dva.safetensors'}",
                       f"face.dlib.predictor={tmp_path / 'gone' / 'shape68.dat'}")
    assert code == EXIT_CHECK_FAILED
    failed = failures(out)
    assert len(failed) == 2, out
    assert failed[0].startswith("model.checkpoint:") and str(tmp_path / "gone" / "dva.safetensors") in failed[0]
    assert "`model.checkpoint`" in failed[0]
    assert failed[1].startswith("face.dlib.predictor:") and "shape68.dat" in failed[1]
    assert checks(out)["input"][0] == checks(out)["output"][0] == "ok"  # the other checks still ran
    assert not (tmp_path / "out").exists()  # the output probe leaves no folder behind


@pytest.mark.parametrize("face_preset, key", [("fan", "face.fan.weights"),
                                              ("scrfd", "face.insightface.detector_weights")])
def test_an_unset_face_weight_names_the_key_of_the_job(capsys, two_clips, tmp_path, face_preset, key):
    """As the cluster presets ship: the face back end's files unset. The fix named is the job's own key."""
    code, out, _ = run(capsys, "check", "edit", *TINY_RANDOM, f"input={two_clips}", f"output={tmp_path / 'out'}",
                       f"face_preset={face_preset}")
    assert code == EXIT_CHECK_FAILED
    (failed,) = failures(out)
    assert failed.startswith("face.") and "no file configured" in failed
    assert f"(config key `{key}`)" in failed and f"Point `{key}` at" in failed, failed


def test_a_preset_that_cannot_be_built_is_a_failed_check_naming_the_key(capsys, monkeypatch, two_clips, tmp_path):
    from dva.models import encoders

    # What `fan_landmarks` did before its module existed: a registry entry whose module is not there.
    monkeypatch.setitem(encoders._REGISTRY, "not_written_yet", "dva.models.not_written_yet:build")
    code, out, _ = run(capsys, "check", "edit", *TINY_RANDOM, f"input={two_clips}", f"output={tmp_path / 'out'}",
                       "model.landmark_encoder.kind=not_written_yet")
    assert code == EXIT_CHECK_FAILED
    (failed,) = failures(out)
    assert failed.startswith("model.landmark_encoder: cannot be built: ModuleNotFoundError")
    assert "dva.models.not_written_yet" in failed and "Traceback" not in out


@pytest.mark.parametrize("where", ["local", "s3"])
def test_an_unreadable_input_prefix_is_named(capsys, request, tmp_path, where):
    source = str(tmp_path / "no-videos-here") if where == "local" else "s3://no-such-bucket-dva/videos"
    if where == "s3":
        request.getfixturevalue("s3_server")
    code, out, _ = run(capsys, "edit", "--dry-run", *TINY_RANDOM, f"input={source}", f"output={tmp_path / 'out'}")
    assert code == EXIT_CHECK_FAILED
    (failed,) = failures(out)
    assert failed.startswith("input:") and source in failed


def test_an_unwritable_local_output_is_named(capsys, two_clips, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, out, _ = run(capsys, "check", "edit", *TINY_RANDOM, f"input={two_clips}", f"output={blocker}/out")
    assert code == EXIT_CHECK_FAILED
    (failed,) = failures(out)
    assert failed.startswith("output:") and f"{blocker}/out" in failed


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_is_named(capsys, two_clips, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        code, out, _ = run(capsys, "check", "edit", *TINY_RANDOM, f"input={two_clips}", f"output={locked}")
    finally:
        locked.chmod(0o755)
    assert code == EXIT_CHECK_FAILED
    (failed,) = failures(out)
    assert failed.startswith("output:") and "access denied" in failed


def test_an_output_bucket_that_does_not_exist_is_named(capsys, s3_server, two_clips):
    code, out, _ = run(capsys, "check", "edit", *TINY_RANDOM, f"input={two_clips}",
                       "output=s3://no-such-bucket-dva/out")
    assert code == EXIT_CHECK_FAILED
    (failed,) = failures(out)
    assert failed.startswith("output:") and "s3://no-such-bucket-dva/out" in failed
    assert "dva-test-secret-key" not in out  # credentials never printed


def test_a_bad_key_is_a_usage_error_naming_it(capsys, tmp_path):
    code, out, err = run(capsys, "check", "edit", *TINY, "input=x", "output=y", "generate.batch_framez=4")
    assert code == EXIT_USAGE
    assert "generate.batch_framez" in err and "[dva check]" not in out  # nothing was checked


def test_an_unknown_job_is_a_usage_error(capsys):
    code, _, err = run(capsys, "check", "paint")
    assert code == EXIT_USAGE and "edit" in err


def test_a_passing_check_prints_the_plan(capsys, two_clips, tmp_path):
    from dva.runtime.inputs import discover_inputs
    from dva.runtime.manifest import ResultRow, output_uri, write_result
    from dva.video.decode import probe

    from dva.pipeline.edit_job import job_config_from_arguments
    from dva.pipeline.fingerprint import PairFingerprints
    from dva.pipeline.stages import latent_key
    from dva.storage import file_stamp

    out_dir = str(tmp_path / "out")
    overrides = [f"input={two_clips}", f"output={out_dir}", "random_weights=true"]
    done, todo = discover_inputs(str(two_clips))
    finished = output_uri(out_dir, done.key, "reconstruct")  # as the job leaves a finished pair: video, then row
    os.makedirs(os.path.dirname(finished))
    open(finished, "wb").close()
    cfg = job_config_from_arguments("local_tiny", overrides)
    made_from = PairFingerprints(cfg, latent_key(cfg))(file_stamp(done.uri), "reconstruct")
    write_result(out_dir, ResultRow(done.uri, done.video_id, "reconstruct", "ok", frames=12, output=finished,
                                    fingerprint=made_from))
    write_result(out_dir, ResultRow(todo.uri, todo.video_id, "reconstruct", "ok", frames=12, output=finished,
                                    fingerprint="other weights"))  # made by another model: to do again

    code, out, _ = run(capsys, "check", "edit", *TINY, *overrides)
    assert code == 0, out
    assert "every check passed" in out
    assert "--- resolved config" in out and "model_preset: tiny" in out
    status, detail = checks(out)["random_weights"]  # asked for, so it runs, and the check says what it means
    assert status == "warn" and "the UNet has random weights" in detail and "not edits" in detail
    plan = dict(line.strip().split("  ", 1) for line in out.split("--- plan ---")[1].splitlines()[1:]
                if line.startswith("  "))
    frames = probe(todo.uri).num_frames
    steps = 10  # local_tiny
    assert plan["videos"].strip() == "2 (1 with work to do)"
    assert plan["(video, edit) pairs"].strip() == "1 to do, 1 already done (skipped)"
    assert plan["frames"].strip().startswith(f"{frames} ")
    # one face in every frame, found by the sampled detection
    assert plan["face frames"].strip().startswith(f"{frames} of the faces") and "sampled detection" in out
    assert plan["UNet calls"].strip().startswith(f"{frames * (2 * steps - 1):,}: inversion (ddim, {steps - 1} ")
    assert "H200-seconds" in plan["estimated GPU time"]
    assert "stage A ≈" in plan["estimated CPU time"] and "stage C ≈" in plan["estimated CPU time"]
    assert "latents " in plan["bytes written"] and "output videos ≈" in plan["bytes written"]


def test_a_checkpoint_is_checked_from_its_header(capsys, tmp_path, tiny_model):
    from dva.config import load_config
    from dva.models.autoencoder import DiffusionVideoAutoencoder
    from dva.runtime.weights import save_checkpoint
    from dva.models.config import ModelConfig

    good = save_checkpoint(tmp_path / "tiny.safetensors", tiny_model)
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(good.read_bytes()[:-1000])
    other = save_checkpoint(tmp_path / "demo.safetensors",
                            DiffusionVideoAutoencoder(load_config(ModelConfig, "demo64", group="model"),
                                                      identity_encoder=tiny_model.identity_encoder,
                                                      landmark_encoder=tiny_model.landmark_encoder))
    # The training job: it builds the same model without a face front end to load.
    args = ["check", "train", "--config", "tiny_cpu", f"data.path={tmp_path / 'no-data'}",
            f"storage_path={tmp_path / 'runs'}"]
    code, out, _ = run(capsys, *args, f"model.checkpoint={good}")
    assert [f.split(":")[0] for f in failures(out)] == ["data.path"]
    status, detail = checks(out)["model.checkpoint"]
    assert status == "ok" and detail.startswith(f"{good}: header read") and "fit model 'tiny'" in detail
    for path, why in ((truncated, "is truncated"), (other, "does not fit model config 'tiny'")):
        code, out, _ = run(capsys, *args, f"model.checkpoint={path}")
        assert code == EXIT_CHECK_FAILED
        failed = failures(out)
        assert failed[0].startswith("model.checkpoint:") and str(path) in failed[0] and why in failed[0]


def test_local_resources_that_can_never_be_placed_fail(capsys, two_clips, tmp_path):
    code, out, _ = run(capsys, "check", "edit", *TINY_RANDOM, f"input={two_clips}", f"output={tmp_path / 'out'}",
                       "generate.num_gpus=64")
    assert code == EXIT_CHECK_FAILED
    (failed,) = failures(out)
    assert failed.startswith("resources:") and "64 GPU to start" in failed


def test_local_ray_offers_no_custom_resources_so_a_stage_that_asks_for_one_fails(capsys, two_clips, tmp_path):
    # As `cluster_gpu` asks for its GPU pods' places (`unet_slot`, ...): a local Ray would never place the actor.
    code, out, _ = run(capsys, "check", "edit", *TINY_RANDOM, f"input={two_clips}", f"output={tmp_path / 'out'}",
                       "generate.resources={unet_slot: 1}")
    assert code == EXIT_CHECK_FAILED
    (failed,) = failures(out)
    assert failed.startswith("resources:") and "1 unet_slot to start" in failed and "0 unet_slot" in failed
    assert "--resources" in failed and "ray_address" in failed


def test_gpu_rate_table_reproduces_the_benchmark():
    for n, fps in gpu_rates.FIRST_EDIT_FRAMES_PER_S.items():
        assert gpu_rates.seconds_per_unet_call(n) * (2 * n - 1) == pytest.approx(1 / fps)
    between = gpu_rates.seconds_per_unet_call(75)
    assert min(gpu_rates.seconds_per_unet_call(50), gpu_rates.seconds_per_unet_call(100)) <= between
    assert between <= max(gpu_rates.seconds_per_unet_call(50), gpu_rates.seconds_per_unet_call(100))
    assert gpu_rates.seconds_per_unet_call(20, gflop_per_forward=771.0 / 2) == pytest.approx(
        gpu_rates.seconds_per_unet_call(20) / 2)


def test_the_ray_job_entrypoints_take_dry_run(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "jobs/edit.py", "--dry-run", *TINY_RANDOM,
                           f"input={tmp_path / 'missing'}", f"output={tmp_path / 'out'}"], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == EXIT_CHECK_FAILED, done.stderr
    assert f"input: input {tmp_path / 'missing'} does not exist" in done.stdout


def test_remote_weights_are_checked_without_downloading(capsys, monkeypatch, tmp_path, s3_bucket, tiny_model,
                                                        two_clips):
    import s3fs

    from dva.runtime.weights import save_checkpoint

    cache = tmp_path / "cache"
    monkeypatch.setenv("DVA_CACHE_DIR", str(cache))
    fs = s3fs.S3FileSystem()
    checkpoint = f"{s3_bucket}/models/tiny.safetensors"
    fs.put_file(str(save_checkpoint(tmp_path / "tiny.safetensors", tiny_model)), checkpoint)
    predictor = f"{s3_bucket}/weights/shape68.dat"
    fs.pipe(predictor, b"stand-in: a remote file is only checked to exist")  # so the check must not load it
    args = ["check", "edit", *TINY, f"input={two_clips}", f"output={tmp_path / 'out'}",
            f"model.checkpoint={checkpoint}"]

    code, out, _ = run(capsys, *args, f"face.dlib.predictor={predictor}")
    assert code == 0, out
    assert f"{checkpoint}: header read" in out and "fit model 'tiny'" in out
    status, detail = checks(out)["face.dlib"]
    assert status == "ok" and detail.startswith(f"{predictor} exists") and "not loaded: remote" in detail
    assert not cache.exists() or not any(p.is_file() for p in cache.rglob("*"))  # nothing was fetched

    code, out, _ = run(capsys, *args, f"face.dlib.predictor={s3_bucket}/weights/gone.dat")
    (failed,) = failures(out)
    assert failed.startswith("face.dlib.predictor:") and f"{s3_bucket}/weights/gone.dat" in failed


@pytest.mark.parametrize("job, args, key, named", [
    ("train", ["--config", "tiny_cpu", "data.path={tmp}/no-data", "storage_path={tmp}/runs"], "data.path",
     "{tmp}/no-data/shards"),
    ("train-classifier", ["--config", "local_tiny", "aligned=true", "images={tmp}", "annotations={tmp}/anno.txt",
                          "output={tmp}/clf/x.safetensors"], "annotations", "{tmp}/anno.txt"),
    ("preprocess", ["--config", "local_tiny", "input={tmp}/none", "output={tmp}/data", "frontend.num_cpus=64"],
     "input", "{tmp}/none"),
])
def test_every_job_names_its_own_keys(capsys, tmp_path, job, args, key, named):
    code, out, _ = run(capsys, job, "--dry-run", *(a.format(tmp=tmp_path) for a in args))
    assert code == EXIT_CHECK_FAILED
    failed = failures(out)
    assert failed[0].startswith(f"{key}:") and named.format(tmp=tmp_path) in failed[0], out
    if job == "preprocess":
        assert failed[1].startswith("resources:") and "needs 64 CPU, 0 GPU to start" in failed[1]


def test_a_checkpoint_holding_the_frozen_networks_needs_no_encoder_files(capsys, tmp_path, two_clips):
    """reference256 with a converted checkpoint: the encoders come from the checkpoint, as `load_model` takes
    them. The file is a real safetensors header over a sparse body: only the header is ever read."""
    import json

    from dva.config import load_config
    from dva.models.checkpoint import FORMAT
    from dva.models.config import ModelConfig
    from dva.models.reference.convert import meta_model

    state = meta_model(load_config(ModelConfig, "reference256", group="model")).state_dict()
    header, offset = {"__metadata__": {"format": FORMAT}}, 0
    for name, tensor in state.items():
        end = offset + 4 * tensor.numel()
        header[name] = {"dtype": "F32", "shape": list(tensor.shape), "data_offsets": [offset, end]}
        offset = end
    text = json.dumps(header).encode()
    path = tmp_path / "reference256.safetensors"
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text)
        f.truncate(8 + len(text) + offset)
    code, out, _ = run(capsys, "check", "edit", *TINY, f"input={two_clips}", f"output={tmp_path / 'out'}",
                       "model_preset=reference256", "face.align.crop_size=256", f"model.checkpoint={path}")
    assert code == 0, out
    assert "holds the face_parser, identity_encoder, landmark_encoder weights" in out
    assert "model.identity_encoder" not in checks(out)  # not built from a file of its own


def test_credentials_in_the_config_are_never_printed(capsys, s3_server, tmp_path):
    secret = "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY"
    code, out, err = run(capsys, "check", "train", "--config", "tiny_cpu",
                         f"data.path=s3://AKIAIOSFODNN7EXAMPLE:{secret}@no-such-bucket-dva/data",
                         f"storage_path={tmp_path / 'runs'}")
    assert code == EXIT_CHECK_FAILED
    assert "  path: s3://***@no-such-bucket-dva/data" in out  # the printed config
    assert secret not in out + err and "AKIAIOSFODNN7EXAMPLE" not in out + err
    assert failures(out)[0].startswith("data.path:")


def test_the_files_of_the_edits_still_to_do_are_checked(capsys, tmp_path, two_clips):
    code, out, _ = run(capsys, "check", "edit", *TINY_RANDOM, f"input={two_clips}", f"output={tmp_path / 'out'}",
                       "edit=classifier:Smiling:1.5", 'edit=clip:"face":"face with beard":0.5',
                       f"edit=identity:{tmp_path / 'nobody.png'}")
    assert code == EXIT_CHECK_FAILED
    failed = failures(out)
    assert [f.split(":")[0] for f in failed] == ["clip_edit.clip.weights", "classifier", "edits (identity"]
    assert "config key `clip_edit.clip.weights`" in failed[0] and "config key `classifier`" in failed[1]
    assert str(tmp_path / "nobody.png") in failed[2]
    assert "CLIP directions" in out  # the plan counts the optimisations


def test_a_remote_checkpoint_header_is_read_in_ranges_and_a_damaged_one_fails(capsys, monkeypatch, tmp_path,
                                                                              s3_server, s3_bucket, tiny_model):
    """The header of an s3:// checkpoint is read by ranged GETs (seen by the S3 server: moto's request recorder),
    nothing beyond it; a damaged header is a failed check, and the edit job's driver check refuses it too."""
    import dataclasses
    import json
    import urllib.request

    import s3fs

    from dva.errors import MissingWeightsError
    from dva.runtime.weights import check_checkpoint, save_checkpoint

    good = save_checkpoint(tmp_path / "tiny.safetensors", tiny_model).read_bytes()
    header_end = 8 + int.from_bytes(good[:8], "little")
    damaged = good[:8] + b"{" + b" " * (header_end - 9) + good[header_end:]  # same size, JSON cut
    fs = s3fs.S3FileSystem()
    fs.pipe(f"{s3_bucket}/models/good.safetensors", good)
    fs.pipe(f"{s3_bucket}/models/damaged.safetensors", damaged)
    args = ["check", "train", "--config", "tiny_cpu", f"data.path={tmp_path / 'no-data'}",
            f"storage_path={tmp_path / 'runs'}"]
    recorder = f"{s3_server.endpoint}/moto-api/recorder"
    monkeypatch.chdir(tmp_path)  # the recorder (in this process's server thread) logs to ./moto_recording
    urllib.request.urlopen(urllib.request.Request(f"{recorder}/start-recording", method="POST")).close()
    try:
        _, out, _ = run(capsys, *args, f"model.checkpoint={s3_bucket}/models/good.safetensors")
        status, detail = checks(out)["model.checkpoint"]
        assert status == "ok" and "header read (two ranged reads)" in detail and "fit model 'tiny'" in detail
        code, out, _ = run(capsys, *args, f"model.checkpoint={s3_bucket}/models/damaged.safetensors")
        with pytest.raises(MissingWeightsError, match="not a readable safetensors file"):
            check_checkpoint(dataclasses.replace(tiny_model.cfg, checkpoint=f"{s3_bucket}/models/damaged.safetensors"))
    finally:
        urllib.request.urlopen(urllib.request.Request(f"{recorder}/stop-recording", method="POST")).close()
    assert code == EXIT_CHECK_FAILED
    failed = failures(out)
    assert failed[0].startswith("model.checkpoint:") and "damaged.safetensors" in failed[0]
    assert "is not a readable safetensors file" in failed[0]
    requests = [json.loads(line) for line in (tmp_path / "moto_recording").read_text().splitlines()]
    gets = [r for r in requests if r["method"] == "GET" and "/models/" in r["url"]]
    ranges = [{k.lower(): v for k, v in r["headers"].items()}.get("range") for r in gets]
    assert len(gets) == 6 and None not in ranges, ranges  # two reads per header: dva check ×2, the driver check
    assert set(ranges) == {"bytes=0-7", f"bytes=8-{header_end - 1}"}  # the tensors are never read
