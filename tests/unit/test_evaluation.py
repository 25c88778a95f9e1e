"""`dva eval` and `dva report` without Ray: reconstruction at several N, TL-ID / TG-ID / flicker of edit outputs
(local and s3://), and a report whose every reference exists."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from dva.config import load_config
from dva.errors import ConfigError, DvaError
from dva.evaluation import consistency, load_eval_config
from dva.evaluation.job import main as eval_main
from dva.evaluation.job import run_eval
from dva.evaluation.reconstruction import LpipsScorer, frame_scores, ms_ssim_scales
from dva.face import align_video, iter_crops, load_face_config
from dva.metrics import ms_ssim, ssim
from dva.models.autoencoder import DiffusionVideoAutoencoder
from dva.runtime.weights import save_checkpoint
from dva.models.config import ModelConfig
from dva.frontend import tracks_summary
from dva.latents import LatentKey, LatentStore
from dva.runtime.eval_results import eval_prefix, read_summary, read_table
from dva.runtime.eval_results import write_summary as write_eval_summary
from dva.runtime.manifest import ResultRow, output_uri, write_result
from dva.crops import crops_to_tensor
from dva.report import write_edit_report
from dva.report.edit_report import _reconstruction_section
from dva.report.check import missing_references, references
from dva.storage import exists, join, open_file, write_bytes_atomic
from dva.storage import video_id as make_video_id
from dva.train.loop import OptimConfig, create_train_state, train_step
from dva.video import VideoWriter, iter_frames, probe

# A UNet small enough to overfit 16 px crops in seconds on one CPU core.
SMALL_16 = ["unet.image_size=16", "unet.model_channels=32", "unet.channel_mult=[1]", "unet.attention_resolutions=[]",
            "unet.embed_channels=64", "z_face_dim=64"]
NOISY_EDIT = "classifier:Smiling:1.5"


def overfit_checkpoint(clip: str, landmarker, path) -> str:
    """The small model after 80 seeded steps on the clip's own 16 px crops: its ε means something on this clip."""
    face = load_face_config("dlib", ["align.crop_size=16"])
    track = align_video(clip, landmarker, face)
    images = crops_to_tensor(np.stack(list(iter_crops(iter_frames(clip), track.quads, 16))))
    torch.manual_seed(0)
    model = DiffusionVideoAutoencoder(load_config(ModelConfig, "tiny", SMALL_16, group="model"))
    state = create_train_state(model, OptimConfig(lr=2e-3, ema_decay=0.99))
    generator = torch.Generator().manual_seed(0)
    for _ in range(80):
        train_step(state, {"images": images}, generator)
    return str(save_checkpoint(path, model))


@pytest.fixture
def one_thread():
    """Training and DDIM on 16 px crops gain nothing from threads, and on a shared machine lose a lot to them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_reconstruction_error_falls_as_the_number_of_steps_grows(sample_clip, dlib_landmarker, tmp_path, capsys,
                                                                  one_thread):
    clip = sample_clip("astronaut", frames=8)
    ckpt = overfit_checkpoint(clip, dlib_landmarker, tmp_path / "overfit.safetensors")
    out = str(tmp_path / "eval")
    rc = eval_main(["--config", "local_tiny", "mode=reconstruction", f"input={clip}", f"output={out}",
                    f"model.checkpoint={ckpt}", "steps=[20,5,10]", "face.align.crop_size=16",
                    *[f"model.{o}" for o in SMALL_16]])
    assert rc == 0, capsys.readouterr()
    summary = read_summary(eval_prefix(out, "reconstruction"))
    by_n = summary["by_steps"]
    print({n: {k: round(v, 4) for k, v in m.items() if isinstance(v, float)} for n, m in by_n.items()})
    mse = [by_n[n]["mse"] for n in ("5", "10", "20")]
    ssim = [by_n[n]["ssim"] for n in ("5", "10", "20")]
    psnr = [by_n[n]["psnr"] for n in ("5", "10", "20")]
    assert mse[0] > 2 * mse[1] > 4 * mse[2], mse  # measured: 0.0133, 0.0031, 0.0009
    assert ssim[0] < ssim[1] < ssim[2] and ssim[2] > 0.9, ssim
    assert psnr[0] < psnr[1] < psnr[2], psnr
    assert summary["error_falls_with_steps"] is True and summary["steps"] == [5, 10, 20]
    assert summary["model"]["random_weights"] is False
    assert summary["ms_ssim_scales"] == 1 and by_n["5"]["ms_ssim"] == pytest.approx(by_n["5"]["ssim"])
    assert all(0 < by_n[n]["ssim_zero_padded"] <= 1 and by_n[n]["ssim_zero_padded"] != by_n[n]["ssim"] for n in by_n)
    assert by_n["5"]["lpips"] is None and "lpips_weights" in summary["lpips_skipped"]
    rows = read_table(summary, "results").to_pylist()
    assert [(r["steps"], r["frames"], r["unet_calls"], r["status"]) for r in rows] == [
        (n, 8, (2 * n - 1) * 8, "ok") for n in (5, 10, 20)]


def test_one_run_compares_inversion_methods_and_scores_an_identity_edit(sample_clip, dlib_landmarker, tmp_path,
                                                                         capsys, one_thread):
    """Issue 18: per method and N, reconstruction, cost and the strength of an identity edit from the same x_T."""
    clip = sample_clip("astronaut", frames=8)
    target = sample_clip("grace_hopper", frames=3)
    ckpt = overfit_checkpoint(clip, dlib_landmarker, tmp_path / "overfit.safetensors")
    out = str(tmp_path / "eval")
    rc = eval_main(["--config", "local_tiny", "mode=reconstruction", f"input={clip}", f"output={out}",
                    f"model.checkpoint={ckpt}", "steps=[5,10]", "methods=[ddim,fixed_point:2]", "max_frames=4",
                    f"identity_target={target}", "face.align.crop_size=16", *[f"model.{o}" for o in SMALL_16]])
    assert rc == 0, capsys.readouterr()
    summary = read_summary(eval_prefix(out, "reconstruction"))
    by_method = summary["by_method"]
    assert summary["methods"] == ["ddim", "fixed_point×2"] and summary["by_steps"] == by_method["ddim"]
    print({m: {n: {k: round(v, 4) for k, v in e.items() if isinstance(v, float)} for n, e in t.items()}
           for m, t in by_method.items()})
    ddim, fixed = by_method["ddim"], by_method["fixed_point×2"]
    assert [(ddim[n]["inversion_calls"], fixed[n]["inversion_calls"], fixed[n]["decode_calls"]) for n in ("5", "10")
            ] == [(4, 10, 5), (9, 20, 10)]
    for n in ("5", "10"):  # solving each generation step beats DDIM's approximate inversion at the same N
        assert fixed[n]["rel_x0_error"] < ddim[n]["rel_x0_error"] and fixed[n]["psnr"] > ddim[n]["psnr"], n
    for entry in (*ddim.values(), *fixed.values()):
        assert entry["frames"] == 4 and entry["seconds_per_frame"] > 0
        assert -1 <= entry["id_cos_target"] <= 1 and -1 <= entry["id_cos_source"] <= 1
        assert 0.5 < entry["tl_id"] < 1.5 and 0.5 < entry["tg_id"] < 1.5
    rows = read_table(summary, "results").to_pylist()
    assert sorted((r["inversion"], r["steps"]) for r in rows) == [
        ("ddim", 5), ("ddim", 10), ("fixed_point×2", 5), ("fixed_point×2", 10)]
    section = _reconstruction_section(summary)
    assert "ours (fixed_point×2 inversion)" in section and "Identity edit from the same x_T" in section
    assert summary["identity_edit"]["crop_size"] == 160


def test_ms_ssim_uses_the_scales_that_fit_the_crop():
    assert [ms_ssim_scales(side) for side in (16, 32, 64, 128, 256)] == [1, 2, 3, 4, 5]
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 32, 32, generator=g)
    b = (a + 0.05 * torch.randn(2, 3, 32, 32, generator=g)).clamp(0, 1)
    scores = frame_scores(a, b, LpipsScorer(None, torch.device("cpu")))
    assert torch.allclose(scores["ms_ssim"], ms_ssim(a, b, scales=2))
    assert set(scores) == {"ssim", "ssim_zero_padded", "ms_ssim", "mse", "psnr"}
    assert torch.allclose(scores["ssim_zero_padded"], ssim(a, b, padding="zeros"))


def test_report_shows_the_authors_ssim_in_the_papers_column():
    """The paper's SSIM is the zero-padded one: that is the number beside it; the valid one gets its own column."""
    summary = {"by_steps": {"20": {"ssim": 0.5, "ssim_zero_padded": 0.625, "ms_ssim": 0.75, "lpips": None,
                                   "mse": 0.01, "psnr": 20.0, "frames": 8}},
               "model": {"name": "tiny", "image_size": 32}, "ms_ssim_scales": 2, "error_falls_with_steps": True}
    section = _reconstruction_section(summary)
    headers = re.findall(r"<th>(.*?)</th>", section)
    rows = {tuple(cells[:2]): dict(zip(headers, cells)) for cells in
            (re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr class=\"\w+\">(.*?)</tr>", section))}
    ours, paper_row = rows[("ours (ddim inversion)", "20")], rows[("DVA (paper)", "100")]
    assert ours["SSIM ↑"] == "0.625" and ours["SSIM valid ↑"] == "0.500"
    assert paper_row["SSIM ↑"] == "0.922" and paper_row["SSIM valid ↑"] == "—"


def test_the_report_warns_of_outputs_and_scores_made_with_random_weights(tmp_path):
    def page(out: str) -> str:
        with open_file(write_edit_report(out)) as f:
            return f.read().decode()

    trained, untrained = str(tmp_path / "trained"), str(tmp_path / "untrained")
    for out, flag in ((trained, False), (untrained, True)):  # encode-only rows: the report reads no video
        write_result(out, ResultRow("/in/a.mp4", make_video_id("/in/a.mp4"), "", "ok", frames=4, random_weights=flag))
    write_result(untrained, ResultRow("/in/b.mp4", make_video_id("/in/b.mp4"), "", "ok", frames=4))  # an older row
    assert 'class="warning"' not in page(trained)
    banner = page(untrained).split('<p class="warning">', 1)[1].split("</p>", 1)[0]
    assert banner.startswith("Random weights: 1 of the 2 manifest row(s)") and "not edits" in banner
    write_eval_summary(eval_prefix(trained, "reconstruction"), {
        "mode": "reconstruction", "by_steps": {"20": {"ssim": 0.5, "ms_ssim": 0.75, "lpips": None, "mse": 0.01,
                                                      "psnr": 20.0, "frames": 8}},
        "model": {"name": "tiny", "image_size": 32, "random_weights": True}, "ms_ssim_scales": 2,
        "error_falls_with_steps": False})
    banner = page(trained).split('<p class="warning">', 1)[1].split("</p>", 1)[0]
    assert "the reconstruction evaluation ran with <code>random_weights: true</code>" in banner
    assert "manifest row" not in banner


def test_configured_but_unusable_lpips_stops_the_run_up_front(tmp_path):
    with pytest.raises(DvaError, match="lpips"):
        LpipsScorer(str(tmp_path / "missing.pth"), torch.device("cpu"))


# A reconstruction run of these config tests: no checkpoint, so random weights (said explicitly).
RECONSTRUCTION = ["random_weights=true", "input=clips/", "output=out/"]


@pytest.mark.parametrize("override, key", [
    ("mode=compare", "mode"), ("steps=[1,10]", "steps"), ("identity.kind=random", "identity.kind"),
    ("face.align.crop_size=64", "face.align.crop_size"), ("output=", "output")])
def test_bad_eval_config_names_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_eval_config("local_tiny", [*RECONSTRUCTION, override])


def test_methods_to_compare_are_parsed_and_checked():
    cfg = load_eval_config("local_tiny", [*RECONSTRUCTION, "methods=[ddim,fixed_point,fixed_point:3]",
                                          "inversion.iterations=4"])
    assert [c.label for c in cfg.inversions] == ["ddim", "fixed_point×4", "fixed_point×3"]
    assert [c.label for c in load_eval_config("local_tiny", RECONSTRUCTION).inversions] == ["ddim"]
    for methods, key in (("[ddim,exact]", r"methods\[1\]\.method"), ("[fixed_point:0]", r"methods\[0\]\.iterations"),
                         ("[fixed_point:x]", r"methods\[0\]"), ("[ddim,ddim]", "methods")):
        with pytest.raises(ConfigError, match=key):
            load_eval_config("local_tiny", [*RECONSTRUCTION, f"methods={methods}"])
    with pytest.raises(ConfigError, match="identity_target"):
        load_eval_config("local_tiny", ["mode=edit", "input=a", "identity_target=b.mp4"])


def test_edit_mode_defaults_its_output_to_the_edit_run():
    cfg = load_eval_config("local_tiny", ["mode=edit", "input=s3://bucket/edits"])
    assert cfg.output_prefix == "s3://bucket/edits" and cfg.crop_size_for_identity == 160
    assert cfg.model.checkpoint is None and not cfg.random_weights  # it scores videos: no UNet, no weights needed


def _copy(src: str, dst: str) -> None:
    with open_file(src) as f:
        write_bytes_atomic(dst, f.read())


def fake_edit_run(root: str, clip: str, landmarker, face_cfg) -> str:
    """The outputs an edit job leaves (manifest rows, the face track, edited videos), written without Ray: one edit
    is the source itself, one adds fresh noise to every frame, and one video failed."""
    source, out = join(root, "in", "astronaut.mp4"), join(root, "out")
    _copy(clip, source)
    vid = make_video_id(source)
    store = LatentStore(out, vid)  # the face track as stage A stores it
    track = align_video(source, landmarker, face_cfg)
    store.save_tracks([track], [(np.zeros((1, 1)), np.zeros((1, 1)))], tracks_summary(source, [track], np.ones((1, 4))))
    store.commit_tracks(LatentKey("m", 1, 1), 1, source, "")
    info = probe(source)
    same, noisy = output_uri(out, "astronaut.mp4", "reconstruct"), output_uri(out, "astronaut.mp4", NOISY_EDIT)
    _copy(source, same)
    rng = np.random.default_rng(0)
    with VideoWriter(noisy, info.fps, crf=12) as writer:
        for frame in iter_frames(source):
            writer.write(np.clip(frame + rng.normal(0, 20, frame.shape), 0, 255).astype(np.uint8))
    for edit, output in (("reconstruct", same), (NOISY_EDIT, noisy)):
        write_result(out, ResultRow(source, vid, edit, "ok", frames=info.num_frames, fps=float(info.fps),
                                    seconds=1.0, output=output))
    broken = join(root, "in", "broken.mp4")
    write_result(out, ResultRow(broken, make_video_id(broken), "reconstruct", "failed",
                                error=f"{broken}: cannot be opened as a video <b>(corrupt)</b>"))
    return out


def test_edit_that_is_the_source_scores_one_and_noise_shows_as_flicker(storage_root, sample_clip, dlib_landmarker,
                                                                        face_cfg, tmp_path):
    out = fake_edit_run(storage_root, sample_clip("astronaut", frames=8), dlib_landmarker, face_cfg)
    before = write_edit_report(out, str(tmp_path / "before_eval"))  # a report needs no evaluation
    with open(before) as f:
        assert "Not evaluated for this run" in f.read() and missing_references(before) == []
    cfg = load_eval_config("local_tiny", ["mode=edit", f"input={out}"])
    summary = read_summary(run_eval(cfg))
    assert summary["counts"] == {"ok": 2, "failed": 0} and summary["identity"]["kind"] == "dlib_identity"
    pairs = {r["edit"]: r for r in read_table(summary, "results").to_pylist()}
    same, noisy = pairs["reconstruct"], pairs[NOISY_EDIT]
    assert same["tl_id"] == pytest.approx(1.0, abs=1e-9) and same["tg_id"] == pytest.approx(1.0, abs=1e-9)
    assert same["flicker"] == pytest.approx(1.0, abs=1e-9) and same["id_cosine"] == pytest.approx(1.0, abs=1e-9)
    assert same["frames"] == same["face_frames"] == 8
    assert noisy["flicker"] > 1.5, noisy  # per-frame noise is change the source does not have
    assert noisy["tl_id"] < 1.0 and noisy["id_cosine"] < 0.999
    frames = read_table(summary, "frames").to_pylist()
    assert len(frames) == 16 and all(r["face"] for r in frames)

    # The report of that run, in its default place (beside the outputs) and in a local folder elsewhere.
    for report in (None, str(tmp_path / "report")):
        index = write_edit_report(out, report)
        assert index == join(report or join(out, "report"), "index.html") and exists(index)
        assert missing_references(index) == []
        with open_file(index) as f:
            page = f.read().decode()
        refs = references(page)
        videos = [ref for tag, attr, ref in refs if (tag, attr) == ("video", "src")]
        assert len(videos) == 3  # source and two edits, each with its middle frame as poster and its aligned face:
        assert sum(attr == "poster" for _, attr, _ in refs) == 3 and sum(tag == "img" for tag, _, _ in refs) == 4
        assert "0.995" in page and "0.996" in page and "0.961" in page  # the paper's numbers are next to ours
        assert "cannot be opened as a video &lt;b&gt;(corrupt)&lt;/b&gt;" in page  # errors shown, escaped
        assert "https://" not in page and "http://" not in page  # nothing from outside
        if report and storage_root.startswith("s3://"):  # s3 videos are copied next to a local report
            assert all(ref.startswith("media/") for ref in videos)
        else:  # elsewhere they are linked where they are
            assert not any(ref.startswith(("media/", "s3:")) for ref in videos)


def test_missing_identity_weights_name_the_config_key(tmp_path):
    cfg = load_eval_config("local_tiny", ["mode=edit", f"input={tmp_path}", "identity.kind=insightface_arcface",
                                          "identity.dim=512"])
    with pytest.raises(DvaError, match=r"identity\.weights"):
        consistency.build_identity_embedder(cfg.identity, torch.device("cpu"))


def test_an_edit_of_another_length_than_its_source_is_refused(sample_clip, dlib_landmarker, face_cfg):
    source, shorter = sample_clip("astronaut", frames=8), sample_clip("astronaut", frames=6)
    track = align_video(source, dlib_landmarker, face_cfg)
    with pytest.raises(DvaError, match="differ in frame count"):
        consistency.evaluate_pair(source, shorter, track, lambda images: torch.ones(len(images), 4), crop_size=64,
                                  brow_lift=0.35)
