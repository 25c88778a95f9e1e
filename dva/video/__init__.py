"""Video in and out: streaming decode with rotation, H.264 encode at the source timestamps, audio and colour tags
carried over."""

from dva.video.decode import Colour, VideoInfo, iter_chunks, iter_frames, iter_timed_frames, probe, stack_chunks
from dva.video.encode import VideoWriter

__all__ = ["Colour", "VideoInfo", "VideoWriter", "iter_chunks", "iter_frames", "iter_timed_frames", "probe",
           "stack_chunks"]
