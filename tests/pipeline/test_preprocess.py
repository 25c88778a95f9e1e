"""`dva preprocess` on local Ray: one shard row per frame of every good video, lossless crops, codes of the crop and
of its mirror image, hull masks; bad videos recorded; reruns skip what is done."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from dva.errors import ConfigError
from dva.face.crop_video import align_video
from dva.face.landmarker import build_landmarker
from dva.face.mask import landmark_hull_mask
from dva.face.warp import iter_crops
from dva.runtime.weights import load_model
from dva.runtime.manifest import read_manifest
from dva.crops import crops_to_tensor
from dva.storage import video_id
from dva.train.config import load_preprocess_config
from dva.train.preprocess import run_preprocess
from dva.train.shards import decode_png, list_shards, read_dataset_info
from dva.video import iter_frames, probe

GOOD = ("astronaut.mp4", "grace hopper.mp4", "sub/astronaut two.mp4")
BAD = ("broken.mp4", "empty.mp4", "no_face.mp4")


def config(input_: str, output: str, *extra: str):
    return load_preprocess_config("local_tiny", [f"input={input_}", f"output={output}", "chunk_frames=3",
                                                 "progress=false", *extra])


@pytest.fixture(scope="module")
def prepared(ray_local, clip_folder, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("data"))
    cfg = config(clip_folder, out)
    return cfg, run_preprocess(cfg), out


def test_one_row_per_frame_of_each_good_video_and_bad_ones_recorded(prepared, clip_folder):
    cfg, summary, out = prepared
    table = pa.concat_tables([pq.read_table(uri) for uri in list_shards(out)])
    expected = {video_id(f"{clip_folder}/{name}"): probe(f"{clip_folder}/{name}").num_frames for name in GOOD}
    assert summary.ok == 3 and summary.failed == 3 and summary.frames == table.num_rows == sum(expected.values())
    for vid, n in expected.items():
        rows = table.filter(pc.equal(table["video_id"], vid))
        assert sorted(rows["frame"].to_pylist()) == list(range(n))
        assert set(rows["num_frames"].to_pylist()) == {n}
    manifest = {r["video"].rsplit("/", 1)[-1]: r for r in read_manifest(out).to_pylist()}
    for name in BAD:
        assert manifest[name]["status"] == "failed" and manifest[name]["error"], manifest[name]
    assert "face" in manifest["no_face.mp4"]["error"]
    assert read_dataset_info(out).image_size == 32 and read_dataset_info(out).mask == "landmark_hull"


def test_rows_hold_the_lossless_crop_its_codes_and_hull_mask(prepared, clip_folder):
    """The same front end as the edit job, recomputed here in one process for one video."""
    cfg, _, out = prepared
    uri = f"{clip_folder}/astronaut.mp4"
    track = align_video(uri, build_landmarker(cfg.face), cfg.face)
    crops = np.stack(list(iter_crops(iter_frames(uri), track.quads, track.crop_size)))
    table = pq.read_table(f"{out}/shards/{video_id(uri)}.parquet").sort_by("frame").to_pylist()
    stored = np.stack([decode_png(r["image"], colour=True) for r in table])
    assert np.array_equal(stored, crops)
    model = load_model(cfg.model)
    images = crops_to_tensor(crops)
    for column, codes in (("z_id", model.encode_identity(images)), ("z_lnd", model.encode_landmarks(images)),
                          ("z_id_flip", model.encode_identity(images.flip(-1))),
                          ("z_lnd_flip", model.encode_landmarks(images.flip(-1)))):
        assert torch.allclose(torch.tensor([r[column] for r in table]), codes, atol=1e-5), column
    assert not torch.allclose(torch.tensor([r["z_lnd_flip"] for r in table]), torch.tensor([r["z_lnd"] for r in table]))
    for i, r in enumerate(table):
        hull = landmark_hull_mask(track.crop_points(i), 32, cfg.face.mask.brow_lift)
        mask = decode_png(r["mask"], colour=False) > 127
        assert np.array_equal(mask, hull) and 0.2 < mask.mean() < 0.9


def test_rerun_skips_done_videos_and_refuses_other_encoders(prepared, clip_folder, tmp_path):
    cfg, _, out = prepared
    manifest = tmp_path / "good.csv"
    manifest.write_text("uri\n" + "".join(f"{clip_folder}/{name}\n" for name in GOOD))
    again = run_preprocess(config(str(manifest), out))
    assert (again.ok, again.failed, again.skipped) == (0, 0, 3)
    with pytest.raises(ConfigError, match="identity_encoder"):
        run_preprocess(config(str(manifest), out, "model.identity_encoder.dim=64"))
