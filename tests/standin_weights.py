"""Stand-in weight files in the formats the real ones are released in, with seeded random or constructed values.

Tests that build the paper's presets need every configured file to exist and load; these writers make files that the
project's loaders, and the libraries behind them, read exactly as they would read the released ones. Random
networks of the real architectures are in `dva.standins`; the detectors and landmarks here are constructed instead,
so that a rehearsal finds a face where the test put one: `write_s3fd_box` and `write_scrfd_box_onnx` each report one
box, chosen by the test, on any image, and `write_meanface68_onnx` puts a mean face into any box.

`StandIns` reads a resolved config (any job's, a model's or a face front end's), writes the file for every weight
key its kinds and back ends name, and returns the `key=path` overrides that point the config at them.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from dva.standins import write_fan, write_s3fd

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels of the detector's input


def write_s3fd_box(path: Path, box: Box) -> Path:
    """An S3FD state dict that finds exactly one face, `box` (frame pixels), on any image of at least 128 px.

    Every weight is zero, so each feature map is constant; the last level (stride 128, 512-px anchors) gets a
    constant 1 from conv7_2's bias. Its face logit is 5 minus 10 for each of "not in the top row" and "not in the
    left column" (two taps of the 3×3 head conv that see the zero padding only there), so only the top-left anchor,
    centred at (64, 64), passes; its box regression (a bias) moves that anchor onto `box`. Every other level's bias
    says background.
    """
    from face_alignment.detection.sfd.net_s3fd import s3fd

    state = {k: torch.zeros_like(v) for k, v in s3fd().state_dict().items()}
    for key in state:
        if key.endswith("_mbox_conf.bias"):
            state[key][:-1] = 10.0  # background (cls1 maxes three background channels)
    state["conv7_2.bias"][:] = 1.0
    state["conv7_2_mbox_conf.bias"][:] = torch.tensor([0.0, 5.0])
    state["conv7_2_mbox_conf.weight"][1, :, 0, 1] = -10.0 / 256  # input row above: absent only in the top row
    state["conv7_2_mbox_conf.weight"][1, :, 1, 0] = -10.0 / 256  # input column left: absent only in column 0
    x0, y0, x1, y1 = box
    anchor_centre, anchor_side = 64.0, 512.0  # variances 0.1 (centre) and 0.2 (size) in face-alignment's decode
    state["conv7_2_mbox_loc.bias"][:] = torch.tensor([
        ((x0 + x1) / 2 - anchor_centre) / (0.1 * anchor_side), ((y0 + y1) / 2 - anchor_centre) / (0.1 * anchor_side),
        math.log((x1 - x0) / anchor_side) / 0.2, math.log((y1 - y0) / anchor_side) / 0.2,
    ])
    torch.save(state, path)
    return path


def _write_onnx(path: Path, nodes: list, inputs: list, outputs: list, initializers: list) -> None:
    import onnx
    from onnx import helper

    graph = helper.make_graph(nodes, path.stem, inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


ARCFACE_POOL = 16  # 112 / 16 = 7: the stand-in ArcFace pools to 3×7×7 and projects to 512


def write_tiny_arcface_onnx(path: Path, batch: int | str = "N", size: int = 112) -> np.ndarray:
    """An insightface-routable recognition ONNX, N×3×size×size → N×512 (average-pool, flatten, linear).
    Returns its weight matrix, so a test can compute what it must output."""
    from onnx import TensorProto, helper, numpy_helper

    cells = 3 * (size // ARCFACE_POOL) ** 2
    weight = np.random.default_rng(0).standard_normal((512, cells)).astype(np.float32)
    _write_onnx(
        path,
        [
            helper.make_node("AveragePool", ["input.1"], ["pooled"], name="pool",
                             kernel_shape=[ARCFACE_POOL, ARCFACE_POOL], strides=[ARCFACE_POOL, ARCFACE_POOL]),
            helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
            helper.make_node("Gemm", ["flat", "weight"], ["683"], name="fc", transB=1),
        ],
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, [batch, 512])],
        [numpy_helper.from_array(weight, "weight")],
    )
    return weight


def _constant_outputs_onnx(path: Path, input_name: str, input_shape: list[int],
                           outputs: dict[str, np.ndarray]) -> None:
    """An ONNX model whose outputs are the given arrays whatever the input (plus 0 × the input's mean, so the
    input is used, as a runtime expects)."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("ReduceMean", [input_name], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
    ]
    inits = [numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    for name, value in outputs.items():
        inits.append(numpy_helper.from_array(value.astype(np.float32), f"{name}_value"))
        nodes.append(helper.make_node("Add", [f"{name}_value", "nothing"], [name]))
    _write_onnx(
        path, nodes,
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, list(v.shape)) for name, v in outputs.items()],
        inits,
    )


SCRFD_STRIDES = (8, 16, 32)
SCRFD_ANCHORS = 2


def write_scrfd_box_onnx(path: Path, box: Box, size: int = 640) -> Path:
    """An SCRFD-layout detector (det_10g's nine outputs: scores, boxes, 5 key points at strides 8/16/32, two
    anchors per cell; fixed size×size input) that reports exactly `box`, given in pixels of its letterboxed input.

    insightface routes a model with at least five outputs to its SCRFD class; with a fixed input size it always
    letterboxes frames to that size, so the test converts a frame box to input pixels (`scrfd_input_box`).
    """
    x0, y0, x1, y1 = box
    centre = ((x0 + x1) / 2, (y0 + y1) / 2)
    stride = SCRFD_STRIDES[-1]
    col, row = (min(max(int(c // stride), 0), size // stride - 1) for c in centre)
    ax, ay = col * stride, row * stride
    outputs: dict[str, np.ndarray] = {}
    for kind, width in (("score", 1), ("bbox", 4), ("kps", 10)):
        for s in SCRFD_STRIDES:
            outputs[f"{kind}_{s}"] = np.zeros(((size // s) ** 2 * SCRFD_ANCHORS, width), np.float32)
    anchor = (row * (size // stride) + col) * SCRFD_ANCHORS
    outputs[f"score_{stride}"][anchor] = 0.9
    outputs[f"bbox_{stride}"][anchor] = np.array([ax - x0, ay - y0, x1 - ax, y1 - ay]) / stride
    _constant_outputs_onnx(path, "input.1", [1, 3, size, size], outputs)
    return path


def scrfd_input_box(frame_box: Box, frame_hw: tuple[int, int], size: int = 640) -> Box:
    """A frame box → the same box in SCRFD's letterboxed size×size input (insightface's resize rule)."""
    h, w = frame_hw
    new_h = size if h / w > 1 else int(size * h / w)
    scale = new_h / h
    return tuple(v * scale for v in frame_box)  # type: ignore[return-value]


LANDMARK_INPUT = 192  # insightface routes a 192×192 input to its Landmark class
LANDMARK_OUTPUT = 3309  # 1k3d68's output width: insightface reads it as 68 3-D points (the last 68 of 1103)


def write_meanface68_onnx(path: Path) -> Path:
    """A 1k3d68-layout landmark model (1×3×192×192 → 1×3309) that puts insightface's own 68-point mean face
    (`meanshape_68.pkl`) into whatever box it is given: the jaw spans 90 % of the box width."""
    from insightface.data import get_object

    mean = np.asarray(get_object("meanshape_68.pkl"), np.float32)
    # Output units: ±1 = the edges of insightface's landmark crop, 1.5 × the box; the mean face's jaw spans ±0.63.
    points = mean * (0.9 / 1.5 / np.abs(mean[:, 0]).max())
    out = np.zeros((1, LANDMARK_OUTPUT), np.float32)
    out[0, -points.size:] = points.ravel()
    _constant_outputs_onnx(path, "data", [1, 3, LANDMARK_INPUT, LANDMARK_INPUT], {"fc1": out})
    return path


def write_irse50(path: Path) -> Path:
    """model_ir_se50.pth: a plain state dict of IR-SE-50."""
    from dva.models.reference.arcface import IRSE50

    torch.manual_seed(0)
    torch.save(IRSE50().state_dict(), path)
    return path


def write_mobilenet_gdconv(path: Path) -> Path:
    """mobilenet_224_model_best_gdconv_external.pth.tar: {'state_dict': {'module.<key>': ...}} (a DataParallel save)."""
    from dva.models.reference.landmarks import MobileNetGDConv

    torch.manual_seed(0)
    torch.save({"state_dict": {f"module.{k}": v for k, v in MobileNetGDConv().state_dict().items()}}, path)
    return path


def write_bisenet(path: Path) -> Path:
    """79999_iter.pth: a plain state dict of the face-parsing BiSeNet."""
    from dva.models.reference.bisenet import BiSeNet

    torch.manual_seed(0)
    torch.save(BiSeNet().state_dict(), path)
    return path


def write_open_clip(path: Path, name: str) -> Path:
    """An open_clip checkpoint of architecture `name`: its model's state dict, fp16, as open_clip loads a file."""
    import open_clip

    from dva.editing.clip_direction import TINY_CLIP, register_tiny_clip

    if name == TINY_CLIP:
        register_tiny_clip()
    torch.manual_seed(0)
    torch.save({k: v.half() for k, v in open_clip.create_model(name).state_dict().items()}, path)
    return path


# Encoder kind → (released file name, writer). Kinds missing here need no file (random, dlib's packaged models).
ENCODER_FILES: dict[str, tuple[str, Callable[[Path], object]]] = {
    "insightface_arcface": ("w600k_r50.onnx", write_tiny_arcface_onnx),
    "fan_landmarks": ("2DFAN4-11f355bf06.pth.tar", write_fan),
    "reference_arcface": ("model_ir_se50.pth", write_irse50),
    "reference_landmarks": ("mobilenet_224_model_best_gdconv_external.pth.tar", write_mobilenet_gdconv),
    "reference_bisenet": ("79999_iter.pth", write_bisenet),
}


class StandIns:
    """Stand-in files in `folder` (each written once) for whatever a config names.

    `face_box` is where the constructed detectors report the face, in frame pixels of `frame_hw` (height, width)
    frames; without it the detectors stand in at their defaults (S3FD finds nothing, SCRFD a central box).
    """

    def __init__(self, folder: Path, face_box: Optional[Box] = None, frame_hw: tuple[int, int] = (480, 640)):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.face_box = face_box
        self.frame_hw = frame_hw

    def file(self, name: str, write: Callable[[Path], object]) -> str:
        path = self.folder / name
        if not path.exists():
            partial = path.with_name(f".partial-{name}")
            write(partial)
            partial.rename(path)
        return str(path)

    def encoder(self, cfg, key: str) -> list[str]:
        if cfg is None or cfg.kind not in ENCODER_FILES:
            return []
        return [f"{key}.weights={self.file(*ENCODER_FILES[cfg.kind])}"]

    def face(self, cfg, prefix: str) -> list[str]:
        """The files of the back end `cfg.backend` (FaceConfig); dlib's come with its package."""
        if cfg.backend == "fan":
            out = [f"{prefix}fan.weights={self.file(*ENCODER_FILES['fan_landmarks'])}"]
            if cfg.fan.detector == "sfd":
                out.append(f"{prefix}fan.detector_weights={self._s3fd()}")
            return out
        if cfg.backend == "insightface":
            size = cfg.insightface.det_size
            box = scrfd_input_box(self.face_box, self.frame_hw, size) if self.face_box else (
                size * 0.35, size * 0.3, size * 0.65, size * 0.7)
            name = f"scrfd_{size}_{'_'.join(str(round(v)) for v in box)}.onnx"
            detector = self.file(name, lambda p: write_scrfd_box_onnx(p, box, size))
            return [f"{prefix}insightface.detector_weights={detector}",
                    f"{prefix}insightface.landmark_weights={self.file('1k3d68.onnx', write_meanface68_onnx)}"]
        return []

    def _s3fd(self) -> str:
        if self.face_box is None:
            return self.file("s3fd-619a316812.pth", write_s3fd)
        name = f"s3fd_{'_'.join(str(round(v)) for v in self.face_box)}.pth"
        return self.file(name, lambda p: write_s3fd_box(p, self.face_box))

    def clip(self, cfg, prefix: str) -> list[str]:
        return [f"{prefix}weights={self.file(f'open_clip_{cfg.name}.bin', lambda p: write_open_clip(p, cfg.name))}"]

    def overrides(self, cfg, prefix: str = "") -> list[str]:
        """`key=path` for every weight file the config `cfg` (a dataclass tree) needs, keys under `prefix`."""
        from dva.editing.clip_direction import ClipModelConfig
        from dva.face.config import FaceConfig
        from dva.models.config import EncoderConfig

        if isinstance(cfg, FaceConfig):
            return self.face(cfg, prefix)
        if isinstance(cfg, ClipModelConfig):
            return self.clip(cfg, prefix)
        out: list[str] = []
        for f in dataclasses.fields(cfg):
            value, key = getattr(cfg, f.name), prefix + f.name
            if isinstance(value, EncoderConfig):
                out += self.encoder(value, key)
            elif dataclasses.is_dataclass(value):
                out += self.overrides(value, key + ".")
        return out
