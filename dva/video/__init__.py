"""Video in and out: streaming decode with rotation, H.264 encode at the source rate, audio carried over."""

from dva.video.decode import VideoInfo, iter_chunks, iter_frames, probe, stack_chunks
from dva.video.encode import VideoWriter

__all__ = ["VideoInfo", "VideoWriter", "iter_chunks", "iter_frames", "probe", "stack_chunks"]
