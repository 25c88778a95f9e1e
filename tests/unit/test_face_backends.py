"""Detector + landmark backends. Only dlib has real weights here; FAN and insightface are checked for their
construction logic: missing files name the config key, files are used from config and nothing is downloaded."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from dva.errors import MissingWeightsError
from dva.face import build_landmarker, load_face_config
from dva.dlib_models import packaged_model
from dva.samples import PORTRAITS, load_photo


@pytest.mark.parametrize("person", ["astronaut", "grace_hopper"])
def test_dlib_finds_the_eyes_of_real_faces(dlib_landmarker, person):
    faces = dlib_landmarker.detect(load_photo(person))
    assert len(faces) == 1
    points = faces[0].points
    assert points.shape == (68, 2)
    for eye, found in zip(PORTRAITS[person].eyes, (points[36:42].mean(0), points[42:48].mean(0))):
        assert np.linalg.norm(found - eye) < 3


def test_dlib_detects_on_a_shrunk_frame_and_reports_full_resolution(dlib_landmarker):
    photo = load_photo("astronaut")
    big = np.repeat(np.repeat(photo, 2, axis=0), 2, axis=1)  # 1024 px > detect_max_side 640
    faces = dlib_landmarker.detect(big)
    assert len(faces) == 1
    expected = np.asarray(PORTRAITS["astronaut"].eyes[0]) * 2
    assert np.linalg.norm(faces[0].points[36:42].mean(0) - expected) < 5


def test_dlib_predictor_files_are_checked(tmp_path):
    with pytest.raises(MissingWeightsError, match="dlib.predictor"):
        build_landmarker(load_face_config("dlib", [f"dlib.predictor={tmp_path}/missing.dat"]))
    with pytest.raises(MissingWeightsError, match=r"config key `face\.dlib\.predictor`"):
        build_landmarker(load_face_config("dlib", [f"dlib.predictor={tmp_path}/missing.dat"]), "face.")
    junk = tmp_path / "junk.dat"
    junk.write_bytes(b"not a predictor")
    with pytest.raises(MissingWeightsError, match="is not a dlib shape predictor"):
        build_landmarker(load_face_config("dlib", [f"dlib.predictor={junk}"]))
    five = packaged_model("shape_predictor_5_face_landmarks.dat", "dlib.predictor")
    with pytest.raises(MissingWeightsError, match="predicts 5 points, 68 are needed"):
        build_landmarker(load_face_config("dlib", [f"dlib.predictor={five}"]))


@pytest.mark.parametrize(
    "overrides, key",
    [([], "fan.weights"), (["fan.weights=/nonexistent/2DFAN4.pth.tar"], "fan.weights"),
     (["fan.weights={weights}"], "fan.detector_weights")],
)
def test_fan_missing_weights_name_the_config_key(tmp_path, overrides, key):
    weights = tmp_path / "fan.pth"
    weights.write_bytes(b"x")
    cfg = load_face_config("fan", [o.format(weights=weights) for o in overrides])
    with pytest.raises(MissingWeightsError, match=key.replace(".", r"\.")) as err:
        build_landmarker(cfg)
    assert err.value.config_key == key
    with pytest.raises(MissingWeightsError) as err:  # inside a job's config, where the face config is `face`
        build_landmarker(cfg, "face.")
    assert err.value.config_key == f"face.{key}" and f"Point `face.{key}` at" in str(err.value)


def test_fan_loads_configured_files_without_downloading(tmp_path, monkeypatch):
    """Random FAN weights and all-zero S3FD weights under made-up names: both must be the ones loaded."""
    import torch
    import torch.hub
    from dva.standins import write_fan, write_s3fd

    def no_download(*args, **kwargs):
        raise AssertionError(f"tried to download {args[:1]}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr("face_alignment.utils.download_url_to_file", no_download)
    monkeypatch.setattr("face_alignment.detection.sfd.sfd_detector.load_state_dict_from_url", no_download)
    fan_state = torch.load(write_fan(tmp_path / "my_fan.bin"), weights_only=True)
    write_s3fd(tmp_path / "my_s3fd.bin")
    hub_before = torch.hub.get_dir()
    landmarker = build_landmarker(load_face_config(
        "fan", [f"fan.weights={tmp_path}/my_fan.bin", f"fan.detector_weights={tmp_path}/my_s3fd.bin"]))
    assert torch.hub.get_dir() == hub_before
    name, loaded = next(iter(landmarker._model.face_alignment_net.state_dict().items()))
    torch.testing.assert_close(loaded, fan_state[name].float())
    assert landmarker.detect(np.zeros((64, 64, 3), np.uint8)) == []  # zero S3FD scores 0.5: nothing passes


def _tiny_onnx(path, input_hw: int, outputs: int) -> None:
    """An ONNX graph with the input size and output width insightface routes models by (content irrelevant)."""
    import onnx
    from onnx import TensorProto, helper

    weight = helper.make_tensor("w", TensorProto.FLOAT, [3, outputs], np.zeros(3 * outputs, np.float32))
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["x"], ["p"]),
         helper.make_node("Flatten", ["p"], ["f"]),
         helper.make_node("MatMul", ["f", "w"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, input_hw, input_hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, outputs])],
        initializer=[weight],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))


def test_insightface_rejects_missing_and_wrong_models(tmp_path):
    with pytest.raises(MissingWeightsError, match="insightface.detector_weights"):
        build_landmarker(load_face_config("dlib", ["backend=insightface"]))
    arcface_like = tmp_path / "w600k.onnx"
    _tiny_onnx(arcface_like, 112, 512)
    cfg = load_face_config("dlib", ["backend=insightface", f"insightface.detector_weights={arcface_like}"])
    with pytest.raises(MissingWeightsError, match="is not a face detection model"):
        build_landmarker(cfg)


def test_insightface_glue_with_stand_in_models(tmp_path, monkeypatch):
    """SCRFD and 1k3d68 replaced by stand-ins: boxes go to the landmark model and 68 (x, y) points come back."""
    import dva.face.backends.insightface as backend

    class Detector:
        def prepare(self, ctx_id, **kwargs):
            self.prepared = (ctx_id, kwargs)

        def detect(self, bgr, input_size):
            assert bgr[0, 0, 0] == 3  # the frame arrives in BGR order
            return np.array([[10, 20, 110, 140, 0.9]], np.float32), None

    class Landmarks:
        lmk_num = 68

        def prepare(self, ctx_id):
            pass

        def get(self, bgr, face):
            return np.tile(np.r_[face.bbox[:2], 7.0], (68, 1))

    models = {"det.onnx": Detector(), "lmk.onnx": Landmarks(), "lmk106.onnx": SimpleNamespace(lmk_num=106)}
    for name in models:
        (tmp_path / name).write_bytes(b"x")
    monkeypatch.setattr(backend, "_load", lambda path, key, device: models[path.name])
    cfg = load_face_config("dlib", ["backend=insightface", f"insightface.detector_weights={tmp_path}/det.onnx",
                                    f"insightface.landmark_weights={tmp_path}/lmk.onnx"])
    frame = np.zeros((160, 160, 3), np.uint8)
    frame[..., 2] = 3
    faces = build_landmarker(cfg).detect(frame)
    assert len(faces) == 1 and faces[0].score == pytest.approx(0.9)
    np.testing.assert_allclose(faces[0].points, np.tile([10, 20], (68, 1)))
    wrong = load_face_config("dlib", ["backend=insightface", f"insightface.detector_weights={tmp_path}/det.onnx",
                                      f"insightface.landmark_weights={tmp_path}/lmk106.onnx"])
    with pytest.raises(MissingWeightsError, match="is not a 68-point landmark model"):
        build_landmarker(wrong)


def test_fan_detects_on_a_shrunk_copy_and_reports_full_resolution(tmp_path):
    from dva import standins

    cfg = load_face_config("fan", [f"fan.weights={standins.write_fan(tmp_path / 'fan.pth')}",
                                   f"fan.detector_weights={standins.write_s3fd(tmp_path / 's3fd.pth')}",
                                   "fan.detect_max_side=320"])
    landmarker = build_landmarker(cfg)
    seen = []

    def detect_from_image(image):
        seen.append(image.shape)
        return [np.array([40.0, 30, 100, 90, 0.9])]

    landmarker._model.face_detector.detect_from_image = detect_from_image
    faces = landmarker.detect(np.zeros((360, 640, 3), np.uint8))
    assert seen == [(180, 320, 3)]
    np.testing.assert_allclose(faces[0].box, [80, 60, 200, 180])
    assert faces[0].score == pytest.approx(0.9) and faces[0].points.shape == (68, 2)
