"""dlib is an optional extra (the cluster image has none): everything else imports and builds without it, and
choosing dlib without it fails with the config key and the install command."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# Runs in a fresh interpreter where `import dlib` fails, as in an image without the [dlib] extra.
SCRIPT = textwrap.dedent("""
    import importlib, pkgutil, sys
    sys.modules["dlib"] = None
    import dva
    from dva import standins
    from dva.errors import ConfigError
    from dva.face import build_landmarker, load_face_config
    from dva.models.config import EncoderConfig
    from dva.models.encoders import build_encoder

    for module in pkgutil.walk_packages(dva.__path__, "dva."):
        importlib.import_module(module.name)

    tmp = sys.argv[1]
    fan = build_landmarker(load_face_config("fan", [
        f"fan.weights={standins.write_fan(tmp + '/fan.pth')}",
        f"fan.detector_weights={standins.write_s3fd(tmp + '/s3fd.pth')}"]))
    print("fan", type(fan).__name__)
    det = standins.write_scrfd_onnx(tmp + "/det.onnx", width=0.1, depth=1)
    lmk = standins.write_landmark68_onnx(tmp + "/lmk.onnx", width=0.1, layers=(1, 1, 1, 1))
    scrfd = build_landmarker(load_face_config("dlib", [
        "backend=insightface", f"insightface.detector_weights={det}", f"insightface.landmark_weights={lmk}"]))
    print("insightface", type(scrfd).__name__)

    def fails(build, *args):
        try:
            build(*args)
        except ConfigError as err:
            print("error:", err)
        else:
            print("no error")

    fails(build_landmarker, load_face_config("dlib"))
    fails(build_landmarker, load_face_config("dlib", ["backend=insightface", f"insightface.detector_weights={det}"]))
    fails(build_landmarker, load_face_config("fan", [f"fan.weights={tmp}/fan.pth", "fan.detector=dlib"]))
    fails(build_encoder, EncoderConfig(kind="dlib_landmarks", dim=102), "model.landmark_encoder", "landmark")
    fails(build_encoder, EncoderConfig(kind="dlib_identity", dim=128), "model.identity_encoder", "identity")
    print("dlib imported:", "dlib" in sys.modules and sys.modules["dlib"] is not None)
""")


pytestmark = pytest.mark.slow  # one subprocess importing all of dva (≈35 s on 2 cores)


@pytest.fixture(scope="module")
def without_dlib(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("no-dlib")
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(folder)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout.splitlines()


def test_every_module_imports_and_fan_and_insightface_build_without_dlib(without_dlib):
    assert "fan FanLandmarker" in without_dlib
    assert "insightface InsightfaceLandmarker" in without_dlib
    assert without_dlib[-1] == "dlib imported: False"


def test_choosing_dlib_without_it_names_the_key_and_the_extra(without_dlib):
    errors = [line for line in without_dlib if line.startswith(("error:", "no error"))]
    keys = ["backend", "insightface.landmark_weights", "fan.detector", "model.landmark_encoder.kind",
            "model.identity_encoder.kind"]
    assert len(errors) == len(keys)
    for key, line in zip(keys, errors):
        assert f"config key `{key}`" in line and "pip install 'dva[dlib]'" in line, line
