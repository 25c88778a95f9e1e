"""Noise schedule, DDIM sampling (invert / generate) and the DVA training loss. Knows nothing about faces."""

from dva.diffusion.ddim import DDIMScheduler, ddim_generate, ddim_invert
from dva.diffusion.losses import dva_loss
from dva.diffusion.schedule import NoiseSchedule, ddim_timesteps

__all__ = ["DDIMScheduler", "NoiseSchedule", "ddim_generate", "ddim_invert", "ddim_timesteps", "dva_loss"]
