"""The noise estimator eps_theta(x_t, t, z_face): the DiffAE FFHQ-256 UNet layout with DVA ResBlocks (SPEC §1.2).

Module and parameter names follow the reference layout (`input_blocks.i.j`, `in_layers.k`, `cond_emb_layers`, ...)
so that released reference weights load without renaming. Every size comes from `UNetConfig`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dva.errors import ConfigError
from dva.models.fused_norm import GroupNorm32
from dva.models.config import ModelConfig, UNetConfig


def normalization(channels: int) -> GroupNorm32:
    groups = min(32, channels)
    if channels % groups:
        raise ConfigError(
            f"config keys `unet.model_channels` / `unet.channel_mult`: they give a {channels}-channel layer, which "
            f"GroupNorm cannot split into {groups} groups; use multiples of 32 (or widths below 32)")
    return GroupNorm32(groups, channels)


def zero_init(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [cos | sin] (cos first, as the reference) of integer timesteps t: [B] -> [B, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimeEmbedding(nn.Module):
    """Sinusoid -> Linear -> SiLU -> Linear. Kept as a wrapper so its keys read `time_embed.time_embed.*`."""

    def __init__(self, model_channels: int, embed_channels: int):
        super().__init__()
        self.model_channels = model_channels
        self.time_embed = nn.Sequential(
            nn.Linear(model_channels, embed_channels), nn.SiLU(), nn.Linear(embed_channels, embed_channels)
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.time_embed(timestep_embedding(t, self.model_channels))


class ResBlock(nn.Module):
    """DVA ResBlock: GN→SiLU→[resample]→conv; GN→time scale+shift; SiLU→conv→GN→z_face scale+shift;
    SiLU→dropout→zero conv; plus skip (1×1 conv when the width changes, resampled like h in up/down blocks)."""

    def __init__(self, channels: int, embed_channels: int, dropout: float, out_channels: int | None = None,
                 up: bool = False, down: bool = False):
        super().__init__()
        out_channels = out_channels or channels
        self.in_layers = nn.Sequential(
            normalization(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.resample = "up" if up else "down" if down else None
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(embed_channels, 2 * out_channels))
        self.cond_emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(embed_channels, 2 * out_channels))
        self.out_layers = nn.Sequential(
            normalization(out_channels), nn.SiLU(), nn.Conv2d(out_channels, out_channels, 3, padding=1),
            normalization(out_channels), nn.SiLU(), nn.Dropout(dropout),
            zero_init(nn.Conv2d(out_channels, out_channels, 3, padding=1)),
        )
        self.skip_connection = (
            nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)
        )

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        if self.resample == "down":
            return F.avg_pool2d(x, 2)
        return x

    def forward(self, x: torch.Tensor, emb: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        # The SiLU modules of in_layers / out_layers run inside the GroupNorm chains (eager or fused).
        h = self.in_layers[0].chain(x, silu=True)
        h = self.in_layers[2](self._resample(h))
        x = self._resample(x)
        h = self.out_layers[0].chain(h, self.emb_layers(emb), silu=True)
        h = self.out_layers[3].chain(self.out_layers[2](h), self.cond_emb_layers(cond), silu=True)
        h = self.out_layers[6](self.out_layers[5](h))
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Spatial self-attention with a residual. qkv channel layout per head is [q | k | v] (reference order)."""

    def __init__(self, channels: int, num_heads: int = 1):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"attention channels {channels} not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.norm = normalization(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = zero_init(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x))  # [B, 3C, T]
        length = qkv.shape[-1]
        q, k, v = qkv.reshape(b * self.num_heads, 3 * c // self.num_heads, length).chunk(3, dim=1)
        # SDPA's softmax(q·k/√d) equals the reference's (q·d^-¼)·(k·d^-¼) scaling.
        h = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        h = h.transpose(1, 2).reshape(b, c, length)
        return (x + self.proj_out(h)).reshape(b, c, *spatial)


class TimestepBlock(nn.Sequential):
    """A sequence of ResBlocks / attention / plain modules that passes (emb, cond) to the ResBlocks."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb, cond) if isinstance(layer, ResBlock) else layer(x)
        return x


class UNet(nn.Module):
    """eps_theta(x_t, t, z_face). `t` holds original-scale integer timesteps (0…T−1), `z_face` is [B, embed]."""

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        mc, emb_ch = cfg.model_channels, cfg.embed_channels
        self.time_embed = TimeEmbedding(mc, emb_ch)

        ch = input_ch = cfg.channel_mult[0] * mc
        self.input_blocks = nn.ModuleList([TimestepBlock(nn.Conv2d(cfg.in_channels, ch, 3, padding=1))])
        skip_channels = [ch]
        resolution = cfg.image_size
        last = len(cfg.channel_mult) - 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, emb_ch, cfg.dropout, mult * mc)]
                ch = mult * mc
                if resolution in cfg.attention_resolutions:
                    layers.append(AttentionBlock(ch, cfg.num_heads))
                self.input_blocks.append(TimestepBlock(*layers))
                skip_channels.append(ch)
            if level != last:
                self.input_blocks.append(TimestepBlock(ResBlock(ch, emb_ch, cfg.dropout, ch, down=True)))
                skip_channels.append(ch)
                resolution //= 2

        self.middle_block = TimestepBlock(
            ResBlock(ch, emb_ch, cfg.dropout), AttentionBlock(ch, cfg.num_heads), ResBlock(ch, emb_ch, cfg.dropout)
        )

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                layers = [ResBlock(ch + skip_channels.pop(), emb_ch, cfg.dropout, mult * mc)]
                ch = mult * mc
                if resolution in cfg.attention_resolutions:
                    layers.append(AttentionBlock(ch, cfg.num_heads))
                if level and i == cfg.num_res_blocks:
                    layers.append(ResBlock(ch, emb_ch, cfg.dropout, ch, up=True))
                    resolution *= 2
                self.output_blocks.append(TimestepBlock(*layers))

        self.out = nn.Sequential(
            normalization(ch), nn.SiLU(), zero_init(nn.Conv2d(input_ch, cfg.out_channels, 3, padding=1))
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor, z_face: torch.Tensor) -> torch.Tensor:
        emb = self.time_embed(t)
        skips = []
        h = x
        for block in self.input_blocks:
            h = block(h, emb, z_face)
            skips.append(h)
        h = self.middle_block(h, emb, z_face)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb, z_face)
        # The last norm + conv in float32 under any autocast: ε sets x̂0 directly, its rounding is not averaged out.
        if h.device.type == "meta":  # FLOP counting; a plain test (not is_autocast_available) keeps one compiled graph
            return self._out(h.float())
        with torch.autocast(device_type=h.device.type, enabled=False):
            return self._out(h.float())

    def _out(self, h: torch.Tensor) -> torch.Tensor:
        return self.out[2](self.out[0].chain(h, silu=True))


def count_gflops(cfg: ModelConfig) -> tuple[int, float]:
    """Parameters and GFLOPs (2 per multiply-add) of one single-image forward, on the meta device: no memory used."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        unet = UNet(cfg.unet)
        s = cfg.unet.image_size
        counter = FlopCounterMode(display=False)
        with counter:
            unet(torch.empty(1, 3, s, s), torch.tensor([500]), torch.empty(1, cfg.z_face_dim))
    return sum(p.numel() for p in unet.parameters()), counter.get_total_flops() / 1e9
