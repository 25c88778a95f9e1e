"""dva.metrics: reconstruction metrics against known values and skimage, identity consistency and flicker ratios."""

import importlib.machinery
import math
import sys
import types

import numpy as np
import pytest
import torch
from skimage import data
from skimage.filters import gaussian
from skimage.metrics import structural_similarity

from dva.errors import DvaError, MissingWeightsError
from dva.metrics.image import lpips_distance, mean_scores, ms_ssim, mse, psnr, reconstruction_scores, ssim
from dva.metrics.temporal import embed_frames, flicker, identity_consistency, video_identity_consistency


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    """A real 256×256 RGB crop in [0, 1], HWC (the face region of skimage's astronaut)."""
    return data.astronaut()[0:256, 128:384].astype(np.float64) / 255


def _batch(*images: np.ndarray) -> torch.Tensor:
    """NHWC float64 arrays as the float32 NCHW batch a model would output."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()


def test_identical_images_score_perfectly(astronaut):
    x = _batch(astronaut, astronaut[::-1].copy())
    scores = reconstruction_scores(x, x.clone())
    assert scores["ssim"].shape == (2,)
    assert torch.allclose(scores["ssim"], torch.ones(2), atol=1e-6)
    assert torch.allclose(scores["ms_ssim"], torch.ones(2), atol=1e-6)
    assert torch.equal(scores["mse"], torch.zeros(2))
    assert torch.isinf(scores["psnr"]).all()


def test_psnr_of_known_gaussian_noise():
    gen = torch.Generator().manual_seed(0)
    clean = 0.3 + 0.4 * torch.rand(2, 3, 64, 64, generator=gen)
    for sigma in (0.01, 0.03):
        noisy = clean + sigma * torch.randn(clean.shape, generator=gen)
        assert 0 < noisy.min() and noisy.max() < 1  # nothing would be clipped, so MSE ≈ σ²
        expected = 10 * math.log10(1 / sigma**2)
        assert torch.allclose(psnr(clean, noisy), torch.full((2,), expected), atol=0.2)
        assert torch.allclose(mse(clean, noisy), torch.full((2,), sigma**2), rtol=0.05)


def test_ssim_matches_skimage_on_blurred_photo(astronaut):
    blurred = [gaussian(astronaut, sigma=s, channel_axis=-1) for s in (1.0, 2.5)]
    ours = ssim(_batch(astronaut, astronaut), _batch(*blurred))
    theirs = [
        structural_similarity(
            astronaut, b, channel_axis=-1, data_range=1.0, gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False,
        )
        for b in blurred
    ]
    assert ours.tolist() == pytest.approx(theirs, abs=1e-3)
    assert theirs[1] < theirs[0] < 0.95  # the blur really costs similarity, so the match is not trivial


def _ssim_formula(a: np.ndarray, b: np.ndarray, zero_pad: bool) -> float:
    """SSIM of two HWC images written straight from the formula: an 11×11 Gaussian window (σ 1.5) placed at every
    position, statistics as weighted sums over it, the SSIM map averaged. With `zero_pad` the images are first
    padded by 5 zeros on every side (pytorch-ssim's `conv2d(padding=5)`, the authors' metric)."""
    x = np.arange(11) - 5.0
    g = np.exp(-(x**2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    if zero_pad:
        a, b = (np.pad(img, ((5, 5), (5, 5), (0, 0))) for img in (a, b))
    pa = np.lib.stride_tricks.sliding_window_view(a, (11, 11), axis=(0, 1))  # [H', W', C, 11, 11]
    pb = np.lib.stride_tricks.sliding_window_view(b, (11, 11), axis=(0, 1))
    def mean(v):
        return (v * w).sum(axis=(-2, -1))
    mu_a, mu_b = mean(pa), mean(pb)
    var_a, var_b = mean(pa * pa) - mu_a**2, mean(pb * pb) - mu_b**2
    cov = mean(pa * pb) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())


@pytest.mark.parametrize("padding", ["valid", "zeros"])
def test_both_ssim_borders_match_the_formula(astronaut, padding):
    """Against an independent implementation of the formula (torchmetrics is not installed; its SSIM is the valid
    variant, which also matches skimage above). Non-square crops, one darkened and one noisy."""
    rng = np.random.default_rng(0)
    crop = astronaut[40:88, 60:124]  # 48×64
    outputs = [crop * 0.7, np.clip(crop + rng.normal(0, 0.08, crop.shape), 0, 1)]
    ours = ssim(_batch(crop, crop), _batch(*outputs), padding=padding)
    expected = [_ssim_formula(crop, out, zero_pad=padding == "zeros") for out in outputs]
    assert ours.tolist() == pytest.approx(expected, abs=1e-5)
    assert max(expected) < 0.95  # the outputs really differ from the crop


def test_zero_padded_ssim_differs_from_valid_and_fits_any_size(astronaut):
    crop = astronaut[40:88, 60:124]
    noisy = np.clip(crop + np.random.default_rng(1).normal(0, 0.08, crop.shape), 0, 1)
    valid, zeros = (ssim(_batch(crop), _batch(noisy), padding=p).item() for p in ("valid", "zeros"))
    assert abs(valid - zeros) > 1e-3, (valid, zeros)  # 48×64 crops: the border is a third of the image
    tiny = _batch(crop[:8, :9])
    assert ssim(tiny, tiny, padding="zeros").item() == pytest.approx(1.0)
    with pytest.raises(DvaError, match="at least 11"):
        ssim(tiny, tiny)
    with pytest.raises(DvaError, match="padding"):
        ssim(tiny, tiny, padding="reflect")


def test_ms_ssim_ranks_blur_and_reduces_to_ssim_at_one_scale(astronaut):
    ref = _batch(astronaut, astronaut)
    out = _batch(*(gaussian(astronaut, sigma=s, channel_axis=-1) for s in (1.0, 2.5)))
    five = ms_ssim(ref, out)
    assert 0.5 < five[1] < five[0] < 1
    assert five[0] > ssim(ref, out)[0]  # coarse scales forgive blur, as MS-SSIM is meant to
    assert torch.allclose(ms_ssim(ref, out, scales=1), ssim(ref, out), atol=1e-6)


def test_ms_ssim_on_small_images_names_the_scales_that_fit():
    x = torch.full((1, 3, 64, 64), 0.5)
    with pytest.raises(DvaError, match="scales=3"):
        ms_ssim(x, x)
    assert ms_ssim(x, x, scales=3).item() == pytest.approx(1.0)


def test_images_outside_unit_range_are_refused():
    x = torch.zeros(1, 3, 32, 32)
    with pytest.raises(DvaError, match=r"\(x \+ 1\) / 2"):
        ssim(x - 1, x)


def test_mean_scores_average_over_all_images_of_all_batches():
    means = mean_scores([{"mse": torch.tensor([1.0, 2.0])}, {"mse": torch.tensor([6.0])}])
    assert means == {"mse": pytest.approx(3.0)}


def test_lpips_without_weights_or_package_says_why_it_is_skipped(monkeypatch):
    x = torch.full((1, 3, 32, 32), 0.5)
    with pytest.raises(MissingWeightsError, match="metrics.lpips_weights"):
        lpips_distance(x, x, None)
    monkeypatch.setitem(sys.modules, "lpips", None)  # as if the package were not installed
    with pytest.raises(DvaError, match="pip install lpips"):
        lpips_distance(x, x, "/nonexistent/lpips_alex.pth")


class _FakeLPIPS(torch.nn.Module):
    """Stands in for lpips.LPIPS: mean absolute difference of the inputs it is given, scaled by a loaded weight."""

    def __init__(self, **kwargs):
        super().__init__()
        self.net = torch.nn.Linear(1, 1, bias=False)
        self.lin0 = torch.nn.Linear(1, 1, bias=False)

    def forward(self, a, b, normalize=False):
        assert normalize  # [0, 1] inputs must be mapped to LPIPS's [-1, 1]
        return (self.lin0.weight * (a - b).abs().mean(dim=(1, 2, 3))).view(-1, 1, 1, 1)


def test_lpips_loads_a_full_state_dict_and_refuses_heads_only(monkeypatch, tmp_path):
    fake = types.ModuleType("lpips")
    fake.__spec__ = importlib.machinery.ModuleSpec("lpips", None)
    fake.LPIPS = _FakeLPIPS
    monkeypatch.setitem(sys.modules, "lpips", fake)
    full = {"net.weight": torch.ones(1, 1), "lin0.weight": torch.full((1, 1), 2.0)}
    torch.save(full, tmp_path / "full.pth")
    torch.save({"lin0.weight": full["lin0.weight"]}, tmp_path / "heads.pth")
    a, b = torch.full((2, 3, 32, 32), 0.5), torch.full((2, 3, 32, 32), 0.25)
    assert lpips_distance(a, b, str(tmp_path / "full.pth")).tolist() == pytest.approx([0.5, 0.5])
    with pytest.raises(MissingWeightsError, match="linear heads"):
        lpips_distance(a, b, str(tmp_path / "heads.pth"))


def _source_embeddings(n: int = 40, dim: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One identity with per-frame jitter, plus two orthonormal directions to rotate it in."""
    gen = torch.Generator().manual_seed(1)
    basis, _ = torch.linalg.qr(torch.randn(dim, 2, generator=gen, dtype=torch.float64))
    identity, away = basis.T
    frames = identity + 0.05 * torch.randn(n, dim, generator=gen, dtype=torch.float64)
    return frames, identity, away


def test_identity_consistency_is_one_for_an_unchanged_video():
    src, _, _ = _source_embeddings()
    scores = identity_consistency(src, src.clone().numpy(), block=7)  # blocks that do not divide N
    assert scores.tl_id == pytest.approx(1.0, abs=1e-12)
    assert scores.tg_id == pytest.approx(1.0, abs=1e-12)


def test_gradual_identity_drift_lowers_tg_id_more_than_tl_id():
    src, identity, away = _source_embeddings()
    n = len(src)
    # Second half: the identity turns gradually towards another person, up to 60° by the last frame.
    angles = torch.cat([torch.zeros(n // 2), torch.linspace(0, math.pi / 3, n - n // 2)]).double()
    along, across = src @ identity, src @ away
    rest = src - along[:, None] * identity - across[:, None] * away
    cos, sin = angles.cos()[:, None], angles.sin()[:, None]
    edited = rest + (along[:, None] * cos - across[:, None] * sin) * identity
    edited = edited + (along[:, None] * sin + across[:, None] * cos) * away
    scores = identity_consistency(src, edited, block=16)
    assert scores.tl_id > 0.99
    assert scores.tg_id < 0.9
    # The same drift measured with one block must agree: blocking is only a memory bound.
    assert identity_consistency(src, edited, block=n).tg_id == pytest.approx(scores.tg_id, abs=1e-12)


def test_identity_consistency_refuses_sources_without_one_identity():
    src = torch.eye(3)  # orthogonal "identities": every source similarity is 0
    with pytest.raises(DvaError, match="positive cosine similarity"):
        identity_consistency(src, src)


def test_video_identity_consistency_streams_chunks_through_the_embedder():
    gen = torch.Generator().manual_seed(2)
    video = 0.5 + 0.1 * torch.randn(10, 3, 8, 8, generator=gen)
    seen = []

    def embed(frames: torch.Tensor) -> torch.Tensor:
        seen.append(len(frames))
        return frames.flatten(1)

    whole = embed_frames(video, embed, chunk=4)
    assert seen == [4, 4, 2]
    assert torch.equal(embed_frames([video[:3], video[3:]], embed), whole)
    assert video_identity_consistency(video, iter([video[:5], video[5:]]), embed).tg_id == pytest.approx(1.0)


def _moving_video(n: int = 12) -> torch.Tensor:
    """A smooth clip: a brightness ramp of 0.005 per frame over a fixed random texture."""
    gen = torch.Generator().manual_seed(3)
    texture = 0.3 + 0.2 * torch.rand(1, 3, 32, 32, generator=gen)
    return texture + 0.005 * torch.arange(n).view(n, 1, 1, 1)


def test_flicker_is_one_for_an_identical_video_and_grows_with_temporal_noise():
    src = _moving_video()
    assert flicker(src, src.clone()) == 1.0
    noisy = src + 0.02 * torch.randn(src.shape, generator=torch.Generator().manual_seed(4))
    # Δ of independent N(0, 0.02²) noise has mean |·| of 0.02·√2·√(2/π) ≈ 0.023 against the source's 0.005.
    assert flicker(src, noisy) > 3


def test_flicker_counts_only_the_masked_face_and_streams_chunks():
    src = _moving_video()
    outside = torch.zeros(32, 32)
    outside[:, 16:] = 1  # noise only in the right half
    noisy = src + 0.02 * torch.randn(src.shape, generator=torch.Generator().manual_seed(5)) * outside
    face = 1 - outside
    assert flicker(src, noisy, face) == pytest.approx(1.0, abs=1e-6)
    per_frame = face.expand(len(src), 1, 32, 32)
    whole = flicker(src, noisy, outside)
    assert whole > 3
    outside_chunks = [outside.expand(5, 1, 32, 32), outside.expand(7, 1, 32, 32)]
    chunked = flicker([src[:5], src[5:]], [noisy[:5], noisy[5:]], outside_chunks)
    assert chunked == pytest.approx(whole, rel=1e-9)
    assert flicker(src, noisy, per_frame, chunk=5) == pytest.approx(1.0, abs=1e-6)


def test_flicker_of_a_still_source_is_refused():
    still = torch.full((4, 3, 16, 16), 0.5)
    with pytest.raises(DvaError, match="still video"):
        flicker(still, still)


def test_flicker_aligns_a_streamed_edit_with_an_in_memory_source_and_checks_lengths():
    src = _moving_video()
    noisy = src + 0.02 * torch.randn(src.shape, generator=torch.Generator().manual_seed(6))
    whole = flicker(src, noisy, chunk=4)
    assert flicker(src, iter([noisy[:7], noisy[7:]]), chunk=4) == pytest.approx(whole, rel=1e-9)
    with pytest.raises(DvaError, match="frame count"):
        flicker(src, iter([noisy[:7]]))
