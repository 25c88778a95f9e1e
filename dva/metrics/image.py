"""Per-image reconstruction metrics (SPEC §4) on image batches [B, C, H, W] with values in [0, 1].

Every metric returns one value per image, shape [B], so a job can keep per-clip rows and average at the end
(`mean_scores`). SSIM follows Wang et al. 2004 (Gaussian window 11, σ 1.5, K1 0.01, K2 0.03, data range 1) in two
conventions for the border:
- "valid" (the default): statistics only where the whole window fits, as Wang et al. and skimage's
  `structural_similarity(gaussian_weights=True, use_sample_covariance=False)` compute it;
- "zeros": the window slides over every pixel and sees zeros beyond the border, as the pytorch-ssim code that
  Diff-AE's and DVA's evaluations use (`conv2d(padding=window // 2)`) does. The DVA paper's SSIM is this one, so
  it is the variant to put next to the paper's numbers; the two differ by the border's share of the image.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from functools import lru_cache

import torch
import torch.nn.functional as F

from dva.errors import DvaError, MissingWeightsError
from dva.storage import local_path

WINDOW = 11
SIGMA = 1.5
K1, K2 = 0.01, 0.03
# Wang, Simoncelli & Bovik 2003, fitted to human judgements from the finest scale to the coarsest.
SSIM_PADDINGS = ("valid", "zeros")
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
LPIPS_CONFIG_KEY = "metrics.lpips_weights"


def _checked_pair(reference: torch.Tensor, output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a pair of image batches and lift them to at least float32, so half-precision model outputs do not
    lose the small differences these metrics measure."""
    if reference.ndim != 4 or reference.shape != output.shape:
        raise DvaError(
            f"metrics need two image batches of one shape [B, C, H, W]; got reference {tuple(reference.shape)} and "
            f"output {tuple(output.shape)}"
        )
    dtype = torch.promote_types(torch.promote_types(reference.dtype, output.dtype), torch.float32)
    reference, output = reference.to(dtype), output.to(dtype)
    for name, x in (("reference", reference), ("output", output)):
        lo, hi = x.aminmax()
        if lo < 0 or hi > 1:
            raise DvaError(
                f"metrics expect {name} images in [0, 1] but its values span [{lo.item():.3g}, {hi.item():.3g}]; "
                "map [-1, 1] model outputs with (x + 1) / 2 and clamp to [0, 1] first"
            )
    return reference, output


def mse(reference: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """Mean squared error of each image, shape [B]."""
    reference, output = _checked_pair(reference, output)
    return (reference - output).square().mean(dim=(1, 2, 3))


def psnr(reference: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of each image for data range 1, shape [B]; +inf for identical images."""
    return -10 * torch.log10(mse(reference, output))


def _gaussian_window(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    x = torch.arange(WINDOW, dtype=dtype, device=device) - (WINDOW - 1) / 2
    g = torch.exp(-x.square() / (2 * SIGMA**2))
    return g / g.sum()


def _luminance_and_contrast_structure(a: torch.Tensor, b: torch.Tensor, padding: str = "valid"
                                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Local SSIM terms, luminance l and contrast-structure cs: where the 11×11 window fits ("valid"), or at every
    pixel with zeros beyond the border ("zeros").

    MS-SSIM needs cs alone at the finer scales, so the two factors are kept apart. The five local moments go
    through one grouped, separable convolution, which is the cheapest way to filter them all (zero-padding each
    pass is the same as zero-padding the image once for the 2-D window).
    """
    if padding not in SSIM_PADDINGS:
        raise DvaError(f"SSIM `padding` must be one of {SSIM_PADDINGS}; got {padding!r}")
    if padding == "valid" and min(a.shape[-2:]) < WINDOW:
        raise DvaError(f"SSIM needs images of at least {WINDOW}×{WINDOW} pixels; got {tuple(a.shape[-2:])}")
    pad = WINDOW // 2 if padding == "zeros" else 0
    channels = 5 * a.shape[1]
    g = _gaussian_window(a.dtype, a.device)
    moments = torch.cat([a, b, a * a, b * b, a * b], dim=1)
    moments = F.conv2d(moments, g.view(1, 1, WINDOW, 1).expand(channels, 1, WINDOW, 1), padding=(pad, 0),
                       groups=channels)
    moments = F.conv2d(moments, g.view(1, 1, 1, WINDOW).expand(channels, 1, 1, WINDOW), padding=(0, pad),
                       groups=channels)
    mu_a, mu_b, aa, bb, ab = moments.chunk(5, dim=1)
    c1, c2 = K1**2, K2**2
    luminance = (2 * mu_a * mu_b + c1) / (mu_a.square() + mu_b.square() + c1)
    var_a, var_b, cov = aa - mu_a.square(), bb - mu_b.square(), ab - mu_a * mu_b
    contrast_structure = (2 * cov + c2) / (var_a + var_b + c2)
    return luminance, contrast_structure


def ssim(reference: torch.Tensor, output: torch.Tensor, padding: str = "valid") -> torch.Tensor:
    """Structural similarity of each image, averaged over channels and window positions, shape [B].

    `padding`: "valid" (Wang et al., skimage) or "zeros" (the DVA/Diff-AE authors' evaluation); see the module."""
    reference, output = _checked_pair(reference, output)
    luminance, contrast_structure = _luminance_and_contrast_structure(reference, output, padding)
    return (luminance * contrast_structure).mean(dim=(1, 2, 3))


def ms_ssim(reference: torch.Tensor, output: torch.Tensor, scales: int = 5) -> torch.Tensor:
    """Multi-scale SSIM of each image, shape [B].

    Each coarser scale halves the image with 2×2 average pooling (an odd last row or column is dropped). The
    coarsest scale still needs the 11-pixel window, so 5 scales need a side of at least 176 (256² inputs are fine);
    smaller images raise an error that names the largest usable `scales`. With fewer than 5 scales the first
    `scales` standard weights are renormalised to sum to 1, so `scales=1` is plain SSIM.
    """
    if not 1 <= scales <= len(MS_SSIM_WEIGHTS):
        raise DvaError(f"ms_ssim `scales` must be in 1..{len(MS_SSIM_WEIGHTS)}; got {scales}")
    reference, output = _checked_pair(reference, output)
    side = min(reference.shape[-2:])
    usable = sum(side >> k >= WINDOW for k in range(len(MS_SSIM_WEIGHTS)))
    if scales > usable:
        fix = f"pass scales={usable}" if usable else "no scale fits the SSIM window"
        raise DvaError(
            f"ms_ssim with {scales} scales needs a side of at least {WINDOW << (scales - 1)} pixels; images are "
            f"{tuple(reference.shape[-2:])}: {fix}"
        )
    weights = torch.tensor(MS_SSIM_WEIGHTS[:scales], dtype=reference.dtype, device=reference.device)
    weights = weights / weights.sum()
    factors = []
    for scale in range(scales):
        luminance, contrast_structure = _luminance_and_contrast_structure(reference, output)
        if scale == scales - 1:
            factors.append((luminance * contrast_structure).mean(dim=(1, 2, 3)))
        else:
            factors.append(contrast_structure.mean(dim=(1, 2, 3)))
            reference, output = F.avg_pool2d(reference, 2), F.avg_pool2d(output, 2)
    # A negative factor (anti-correlated structure) has no real fractional power; count it as no similarity.
    factors = torch.stack(factors, dim=1).clamp(min=0)
    return (factors**weights).prod(dim=1)


@lru_cache(maxsize=2)
def _lpips_alex(path: str, device: str, config_key: str) -> torch.nn.Module:
    """Load LPIPS(alex) once per process and device: Ray actors call `lpips_distance` once per batch."""
    import lpips

    model = lpips.LPIPS(net="alex", pretrained=False, pnet_rand=True, verbose=False)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and tensor errors alike mean "not a torch state dict"
        detail = f"cannot be read by torch.load ({type(err).__name__}: {err})"
        raise MissingWeightsError(path, config_key, detail) from None
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise MissingWeightsError(
            path,
            config_key,
            "not a full LPIPS(net='alex') state dict (the package's own alex.pth holds only the linear heads, not "
            "the AlexNet trunk); write one once where torchvision can fetch AlexNet with "
            f"`torch.save(lpips.LPIPS(net='alex').state_dict(), path)` ({err})",
        ) from None
    return model.eval().requires_grad_(False).to(device)


def lpips_distance(
    reference: torch.Tensor,
    output: torch.Tensor,
    weights_path: str | None,
    *,
    config_key: str = LPIPS_CONFIG_KEY,
) -> torch.Tensor:
    """LPIPS (AlexNet) distance of each image, shape [B]; lower is closer.

    LPIPS needs pretrained AlexNet weights and the `lpips` package, and dva never downloads weights implicitly:
    without either it raises a DvaError whose message is the reason to record when a job skips LPIPS.
    `weights_path` (local path or s3:// URI) holds a full `lpips.LPIPS(net="alex").state_dict()` saved with torch.
    """
    if not weights_path:
        raise MissingWeightsError("<unset>", config_key, "no LPIPS weights configured, so LPIPS is skipped")
    if importlib.util.find_spec("lpips") is None:
        raise DvaError("LPIPS needs the `lpips` package (pip install lpips); LPIPS is skipped")
    reference, output = _checked_pair(reference, output)
    path = str(local_path(weights_path, config_key=config_key))
    model = _lpips_alex(path, str(reference.device), config_key)
    with torch.no_grad():
        return model(reference.float(), output.float(), normalize=True).flatten()


def reconstruction_scores(
    reference: torch.Tensor, output: torch.Tensor, lpips_weights: str | None = None
) -> dict[str, torch.Tensor]:
    """All SPEC §4 reconstruction metrics of a batch, each shape [B]; "lpips" only when `lpips_weights` is given."""
    scores = {
        "ssim": ssim(reference, output),
        "ssim_zero_padded": ssim(reference, output, padding="zeros"),
        "ms_ssim": ms_ssim(reference, output),
        "mse": mse(reference, output),
        "psnr": psnr(reference, output),
    }
    if lpips_weights:
        scores["lpips"] = lpips_distance(reference, output, lpips_weights)
    return scores


def mean_scores(batches: Iterable[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Mean over all images of per-image scores that arrive batch by batch, so a whole test set never sits in memory."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for batch in batches:
        for name, values in batch.items():
            sums[name] = sums.get(name, 0.0) + values.double().sum().item()
            counts[name] = counts.get(name, 0) + values.numel()
    return {name: sums[name] / counts[name] for name in sums}
