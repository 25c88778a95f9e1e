"""A finished pair's fingerprint follows the content of the files its edit reads and stage C's pixel settings."""

from __future__ import annotations

import pytest

import dva.pipeline.fingerprint as fingerprint_module
from dva.latents import LatentKey
from dva.pipeline.config import EditJobConfig
from dva.pipeline.fingerprint import PairFingerprints
from dva.runtime.config import load_job_config

STAMP = "size-mtime of the input"
KEY = LatentKey("model", 3, 3)


@pytest.fixture
def files(tmp_path):
    """A classifier, a direction, an identity reference and CLIP weights, each a file of its own."""
    paths = {"classifier": tmp_path / "smiling.safetensors", "direction": tmp_path / "beard.safetensors",
             "reference": tmp_path / "ref.png", "clip": tmp_path / "clip.bin"}
    for path in paths.values():
        path.write_bytes(b"first content of " + path.name.encode())
    return paths


def edits(files) -> list[str]:
    return [e.format(**files) for e in ("reconstruct", "classifier:Smiling:1.5", "direction:{direction}:0.5",
                                        "identity:{reference}", "reconstruct@match:{reference}",
                                        'clip:"face":"old face":0.5')]


def fingerprints(files, *overrides) -> dict[str, str]:
    """Each edit's fingerprint (and encode-only's, "") from a fresh job, as a rerun computes them."""
    cfg = load_job_config(EditJobConfig, "local_tiny", [
        "input=unused", "output=unused", "random_weights=true", f"classifier={files['classifier']}",
        f"clip_edit.clip.weights={files['clip']}", *overrides])
    pairs = PairFingerprints(cfg, KEY)
    return {e: pairs(STAMP, e) for e in ["", *edits(files)]}


def changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {e for e in before if before[e] != after[e]}


@pytest.mark.parametrize("name, edits_that_read_it", [
    ("classifier", {"classifier:Smiling:1.5"}),
    ("direction", {"direction:{direction}:0.5"}),
    ("reference", {"identity:{reference}", "reconstruct@match:{reference}"}),
    ("clip", {'clip:"face":"old face":0.5'}),
])
def test_a_file_replaced_in_place_changes_only_the_pairs_that_read_it(files, name, edits_that_read_it):
    before = fingerprints(files)
    files[name].write_bytes(b"other content, same path")
    assert changed(before, fingerprints(files)) == {e.format(**files) for e in edits_that_read_it}


def test_the_same_bytes_elsewhere_and_a_new_timestamp_keep_the_fingerprint(files, tmp_path):
    before = fingerprints(files)
    copy = tmp_path / "copy" / "smiling.safetensors"
    copy.parent.mkdir()
    copy.write_bytes(files["classifier"].read_bytes())
    assert fingerprints(files, f"classifier={copy}") == before
    files["reference"].write_bytes(files["reference"].read_bytes())  # rewritten: same bytes
    assert fingerprints(files) == before


@pytest.mark.parametrize("override", ["face.mask.paste_mode=square", "face.mask.blur_px=2", "face.mask.dilate_px=3",
                                      "face.mask.brow_lift=0.2"])
def test_stage_c_settings_change_every_edit_and_not_the_latents(files, override):
    assert changed(fingerprints(files), fingerprints(files, override)) == set(edits(files))


@pytest.mark.parametrize("override, edit", [("faces_match_min_cosine=0.7", "reconstruct@match:{reference}"),
                                            ("clip_edit.iterations=7", 'clip:"face":"old face":0.5')])
def test_an_edit_setting_changes_that_edit_alone(files, override, edit):
    assert changed(fingerprints(files), fingerprints(files, override)) == {edit.format(**files)}


@pytest.mark.parametrize("override", ["writer.retries=1", "clip_task.num_cpus=2", "progress=true",
                                      "clip_edit.output_prefix=/elsewhere"])
def test_settings_that_change_no_pixels_keep_every_fingerprint(files, override):
    assert fingerprints(files, override) == fingerprints(files)


def test_the_latents_and_the_source_are_part_of_it(files):
    cfg = load_job_config(EditJobConfig, "local_tiny", ["input=unused", "output=unused", "random_weights=true"])
    pairs = PairFingerprints(cfg, KEY)
    assert pairs(STAMP, "") == KEY.fingerprint(STAMP)  # an encode-only row: its latents
    assert pairs("another version", "reconstruct") != pairs(STAMP, "reconstruct")
    assert PairFingerprints(cfg, LatentKey("other model", 3, 3))(STAMP, "reconstruct") != pairs(STAMP, "reconstruct")


def test_each_file_is_read_once_per_job_and_a_missing_one_is_no_error(files, tmp_path, monkeypatch):
    digested = []
    digest = fingerprint_module.content_digest
    monkeypatch.setattr(fingerprint_module, "content_digest", lambda uri: digested.append(uri) or digest(uri))
    cfg = load_job_config(EditJobConfig, "local_tiny", ["input=unused", "output=unused", "random_weights=true"])
    pairs = PairFingerprints(cfg, KEY)
    beard, missing = files["direction"], tmp_path / "missing.safetensors"
    for video in range(3):
        for scale in (0.5, 1):
            pairs(f"video {video}", f"direction:{beard}:{scale}")
        pairs(f"video {video}", f"direction:{missing}:1")  # the pair fails in stage A, which says why
    assert digested == [str(beard), str(missing)]
