"""The pieces of a job's plan (`dva check`): face frames from a sampled detection, the work each edit adds, the
CPU rate table against the benchmark file it comes from. The whole plan against a real job:
tests/pipeline/test_check_plan.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dva.preflight import cpu_rates
from dva.preflight.faces import SAMPLED, STORED, VideoFaces, count_faces, sampled_faces
from dva.preflight.plan import EditWork

ROOT = Path(__file__).resolve().parents[2]


def test_a_sampled_detection_counts_each_persons_frames(sample_clip, dlib_landmarker):
    """24 frames, the second person from frame 12 on: every 2nd frame is looked at (16 per video at most)."""
    clip = sample_clip(("astronaut", "grace_hopper"), frames=24, size=(480, 360), face_range=[None, (12, 24)])
    faces = sampled_faces(clip, 24, dlib_landmarker, min_face_size=32.0)
    assert faces == VideoFaces(24, (24, 12), 0, SAMPLED)
    assert sampled_faces(clip, 24, dlib_landmarker, min_face_size=1000.0).faces == ()  # too small: not counted


def test_videos_beyond_the_sampled_ones_are_scaled_and_stored_ones_kept(monkeypatch, sample_clip, dlib_landmarker):
    from dva.preflight import faces as census

    monkeypatch.setattr(census, "SAMPLED_VIDEOS", 1)
    clip = sample_clip(("astronaut", "grace_hopper"), frames=16, size=(480, 360), face_range=[None, (8, 16)])
    stored = VideoFaces(30, (30, 5, 2), 1, STORED)
    found = count_faces([(clip, 16, None), ("never/decoded.mp4", 32, None), ("stored.mp4", 30, stored)],
                        dlib_landmarker, 32.0)
    assert found[clip].faces == (16, 8) and found["stored.mp4"] is stored
    assert found["never/decoded.mp4"].faces == (32, 16) and found["never/decoded.mp4"].how == census.SCALED


def test_edits_add_work_over_the_faces_they_address():
    from dva.editing.edits import parse_edit

    faces = VideoFaces(40, (40, 20, 6), 1, STORED)  # face 1 is the largest
    work = EditWork()
    work.add(faces, ["reconstruct", "reconstruct@largest", "reconstruct@2"], has_x_T=[False, True, False])
    assert parse_edit("reconstruct@largest").face_selector.kind == "largest"
    assert work.face_frames == 66 and work.inverted == 46 and work.x_T_faces == [40, 6]  # face 1's x_T is stored
    assert work.decoded == 66 + 20 + 6 and work.pasted == [66, 20, 6]
    encode = EditWork()
    encode.add(faces, [], has_x_T=[])
    assert encode.face_frames == encode.inverted == 66 and encode.decoded == 0 and encode.pasted == []
    work.merge(encode)
    assert work.inverted == 46 + 66 and work.x_T_faces == [40, 6, 40, 20, 6]


def test_the_front_end_rates_add_up_to_the_benchmarks_totals():
    """Each row of the table: three decodes, a detection, and per face landmarks, two crops, z_id and z_lnd, as
    the benchmark file itemises them, sum to its total CPU ms per frame."""
    text = (ROOT / cpu_rates.FRONTEND_SOURCE).read_text()
    totals = {(name, (int(w), int(h))): float(ms)
              for name, w, h, ms in re.findall(r"^(\w+) (\d+)x(\d+): CPU ([\d.]+) ms/frame", text, re.M)}
    assert set(totals) == {(name, size) for name, rates in cpu_rates.FRONTEND_MS.items() for size in rates}
    for (name, size), total in totals.items():
        rate, measured = cpu_rates.frontend_rate(name, size)
        assert measured == size and rate.find_tracks_ms(1, 1) == pytest.approx(total, abs=0.1), name
    assert cpu_rates.frontend_rate("dlib", (480, 360))[1] == (1280, 720)
    assert cpu_rates.frontend_rate("unmeasured", (480, 360)) is None


@pytest.mark.slow  # a whole evaluation run (no Ray)
def test_an_eval_plan_counts_each_method_at_each_n_as_the_evaluation_does(capsys, sample_clip, tiny_model,
                                                                         tmp_path):
    import pyarrow.parquet as pq

    from dva.cli import main as dva
    from dva.runtime.weights import save_checkpoint

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "late.mp4").write_bytes(Path(sample_clip("astronaut", frames=8, face_range=(4, 8))).read_bytes())
    checkpoint = save_checkpoint(tmp_path / "t.safetensors", tiny_model)
    args = ["--config", "local_tiny", f"input={folder}", f"output={tmp_path / 'eval'}", "steps=[3,2,3]",
            "batch_frames=4", "methods=[ddim,fixed_point:2]", f"model.checkpoint={checkpoint}"]
    assert dva(["check", "eval", *args]) == 0
    out = capsys.readouterr().out
    plan = {what: value.strip() for what, value in (line.strip().split("  ", 1) for line in
                                                     out.split("--- plan ---")[1].splitlines()[1:]
                                                     if line.startswith("  "))}
    assert dva(["eval", *args]) == 0
    rows = pq.read_table(tmp_path / "eval" / "eval" / "reconstruction" / "results.parquet").to_pylist()
    done = {f"{r['inversion']} N={r['steps']}": r["unet_calls"] for r in rows}
    planned = dict(re.findall(r"(\S+ N=\d+) ([\d,]+)", plan["UNet calls"]))
    assert set(planned) == set(done) == {"ddim N=2", "ddim N=3", "fixed_point×2 N=2", "fixed_point×2 N=3"}
    for case, calls in done.items():  # 4 face frames: the face is seen from frame 4 on
        assert int(planned[case].replace(",", "")) == pytest.approx(calls, rel=0.05), case
    assert plan["videos"].startswith(f"1, {rows[0]['frames']} face frames evaluated")
