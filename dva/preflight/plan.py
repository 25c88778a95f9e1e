"""The plan of a job: what it will do, counted (frames, face frames, UNet calls per inversion method and N, bytes
written) and what that costs (CPU-hours of the edit job's CPU stages from `cpu_rates.py`, GPU-hours from
`gpu_rates.py`)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Optional, Sequence

from dva.preflight import cpu_rates, gpu_rates
from dva.preflight.faces import VideoFaces
from dva.preflight.report import describe_error

PROBE_THREADS = 16  # probes wait on storage, not on the CPU


@dataclass(frozen=True)
class Container:
    """What a video's container header says."""

    frames: int
    size: tuple[int, int]  # upright (width, height)
    bytes: int


def probe_videos(uris: Sequence[str]) -> dict[str, Container | str]:
    """Each video's frames, size and bytes from its container header (`dva.video.decode.probe`: the header and one
    decoded frame), or the reason it cannot be read. A container that does not state its frame count gives
    duration × frame rate."""
    from dva.storage import size
    from dva.video.decode import probe

    def read(uri: str) -> Container | str:
        try:
            info = probe(uri)
            frames = info.num_frames or (round(info.duration * info.fps) if info.duration else 0)
            if not frames:
                return "the container states no frame count"
            return Container(frames, info.size, size(uri))
        except Exception as err:  # the job records such a video as failed; the plan says which and why
            return describe_error(err)

    with ThreadPoolExecutor(PROBE_THREADS) as pool:
        return dict(zip(uris, pool.map(read, uris)))


@dataclass
class EditWork:
    """What an edit job does with the faces of its videos, summed over them. Face frames count once per face: a
    frame with two addressed faces counts twice."""

    face_frames: int = 0  # frames of every face some edit addresses (of every face, encode only)
    inverted: int = 0  # of those, the frames of faces without a stored x_T: inverted by the job's method
    decoded: int = 0  # face frames generated, summed over the edits (N UNet calls each)
    pasted: list[int] = field(default_factory=list)  # per (video, edit): the face frames stage C pastes
    x_T_faces: list[int] = field(default_factory=list)  # face frames of each face whose x_T is stored anew

    def add(self, faces: VideoFaces, edits: Sequence[str], has_x_T: Sequence[bool]) -> None:
        """One video: `edits` (none: encode only) over `faces`; `has_x_T[k]`: face k's x_T is stored already."""
        from dva.editing.edits import parse_edit

        addressed = ({e: faces.addressed(parse_edit(e).face_selector) for e in edits} if edits
                     else {"": list(range(len(faces.faces)))})
        todo = sorted({k for ks in addressed.values() for k in ks})
        self.face_frames += sum(faces.faces[k] for k in todo)
        fresh = [k for k in todo if not (k < len(has_x_T) and has_x_T[k])]
        self.inverted += sum(faces.faces[k] for k in fresh)
        self.x_T_faces += [faces.faces[k] for k in fresh]
        for edit in edits:
            frames = sum(faces.faces[k] for k in addressed[edit])
            self.decoded += frames
            self.pasted.append(frames)

    def merge(self, other: EditWork) -> None:
        self.face_frames += other.face_frames
        self.inverted += other.inverted
        self.decoded += other.decoded
        self.pasted += other.pasted
        self.x_T_faces += other.x_T_faces


def describe_gpu_hours(calls_by_steps: dict[int, int], gflop_per_forward: float, model: str) -> str:
    """'≈ X H200-hours' for `calls_by_steps` UNet calls at each N, from the measured rate table."""
    seconds = sum(calls * gpu_rates.seconds_per_unet_call(n, gflop_per_forward) for n, calls in calls_by_steps.items())
    scaled = ("" if model == gpu_rates.MEASURED_MODEL else
              f"; scaled from {gpu_rates.MEASURED_MODEL} by GFLOP per forward ({gflop_per_forward:.3g} vs "
              f"{gpu_rates.MEASURED_GFLOP:g}): a small model fills a GPU less, so a lower bound")
    hours = seconds >= 360  # from a tenth of an hour on; shorter plans in seconds
    amount = f"{seconds / 3600:,.1f} {gpu_rates.GPU}-hours" if hours else f"{seconds:,.3g} {gpu_rates.GPU}-seconds"
    return f"≈ {amount} (bf16, compiled, 32-frame batches: {gpu_rates.SOURCE}{scaled})"


def describe_cpu_hours(seconds: float, what: str) -> str:
    """'≈ X CPU-hours (what)', in CPU-seconds below a tenth of an hour."""
    amount = f"{seconds / 3600:,.1f} CPU-hours" if seconds >= 360 else f"{seconds:,.3g} CPU-seconds"
    return f"≈ {amount} ({what})"


def describe_bytes(size: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:,.1f} {unit}"
    return f"{size:,.0f} B"


def frontend_cpu_s(face_preset: str, size: tuple[int, int], frames: int, face_frames: int, find_tracks: bool
                   ) -> Optional[float]:
    """Stage A CPU-seconds of one video at the measured rate of `face_preset` (None: not measured): finding the
    tracks (every pass), or with stored tracks cropping the `face_frames` to invert again (none: no work)."""
    found = cpu_rates.frontend_rate(face_preset, size)
    if found is None:
        return None
    rate = found[0]
    if find_tracks:
        return rate.find_tracks_ms(frames, face_frames) / 1000
    return rate.crop_again_ms(frames, face_frames) / 1000 if face_frames else 0.0
