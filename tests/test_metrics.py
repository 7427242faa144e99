"""PSNR / SSIM / LPIPS: agreement with independent references and the LPIPS weights policy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.metrics import structural_similarity

from moegs_bench.eval import metrics as metrics_module
from moegs_bench.eval.metrics import (
    LPIPS_BACKBONE_FILES,
    LPIPS_CONVENTIONS,
    LPIPSMetric,
    LPIPSUnavailableError,
    evaluate_images,
    lpips_hub_path,
    mean_metrics,
    metric_notes,
    psnr,
    ssim,
    ssim_map,
)

SIZES = [(11, 11), (16, 23), (40, 33), (64, 64)]


def _random_pair(
    h: int, w: int, seed: int, dtype=torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    a = torch.rand(h, w, 3, generator=gen, dtype=dtype)
    b = (a + 0.15 * torch.randn(h, w, 3, generator=gen, dtype=dtype)).clamp(0, 1)
    return a, b


def _structured_pair(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients, a checkerboard and a bright square; the second image shifted and darkened."""
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    a = torch.stack(
        [xx / (w - 1), yy / (h - 1), ((xx // 4 + yy // 4) % 2).to(torch.float64)], dim=-1
    ).to(torch.float64)
    a[h // 4 : h // 2, w // 4 : w // 2] = 1.0
    b = 0.8 * torch.roll(a, shifts=(1, 2), dims=(0, 1)) + 0.05
    return a, b


def _skimage_ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    return structural_similarity(
        a.numpy(),
        b.numpy(),
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=1.0,
        channel_axis=-1,
    )


def _ssim_3dgs_reference(a: torch.Tensor, b: torch.Tensor) -> float:
    """The 3DGS `ssim()` written out: 2D 11x11 Gaussian window, groups=channel, padding 5."""
    x, y = a.permute(2, 0, 1)[None], b.permute(2, 0, 1)[None]
    g = torch.tensor([math.exp(-((i - 5) ** 2) / (2 * 1.5**2)) for i in range(11)], dtype=x.dtype)
    g = g / g.sum()
    window = (g[:, None] @ g[None, :]).expand(3, 1, 11, 11).contiguous()

    def conv(t):
        return F.conv2d(t, window, padding=5, groups=3)

    mu1, mu2 = conv(x), conv(y)
    s11 = conv(x * x) - mu1**2
    s22 = conv(y * y) - mu2**2
    s12 = conv(x * y) - mu1 * mu2
    c1, c2 = 0.01**2, 0.03**2
    m = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1**2 + mu2**2 + c1) * (s11 + s22 + c2))
    return m.mean().item()


@pytest.mark.parametrize("h,w", SIZES)
def test_ssim_skimage_convention_matches_skimage_random(h, w):
    a, b = _random_pair(h, w, seed=h * 100 + w)
    assert ssim(a, b, "skimage").item() == pytest.approx(_skimage_ssim(a, b), abs=1e-4)


@pytest.mark.parametrize("h,w", SIZES[1:])
def test_ssim_skimage_convention_matches_skimage_structured(h, w):
    a, b = _structured_pair(h, w)
    assert ssim(a, b, "skimage").item() == pytest.approx(_skimage_ssim(a, b), abs=1e-4)


def test_ssim_skimage_convention_float32_batched():
    pairs = [_random_pair(30, 45, seed=s, dtype=torch.float32) for s in range(3)]
    a = torch.stack([p[0] for p in pairs])
    b = torch.stack([p[1] for p in pairs])
    ours = ssim(a, b, "skimage")
    assert ours.shape == (3,)
    for i in range(3):
        assert ours[i].item() == pytest.approx(_skimage_ssim(a[i], b[i]), abs=1e-4)


@pytest.mark.parametrize("h,w", [(8, 9), (16, 23), (40, 33)])
def test_ssim_3dgs_matches_direct_reference(h, w):
    a, b = _random_pair(h, w, seed=7)
    assert ssim(a, b, "3dgs").item() == pytest.approx(_ssim_3dgs_reference(a, b), abs=1e-10)
    a, b = _structured_pair(max(h, 12), max(w, 12))
    assert ssim(a, b, "3dgs").item() == pytest.approx(_ssim_3dgs_reference(a, b), abs=1e-10)


@pytest.mark.parametrize("convention", ["3dgs", "skimage"])
def test_ssim_identity_is_one(convention):
    a, _ = _random_pair(24, 31, seed=3)
    assert ssim(a, a, convention).item() == pytest.approx(1.0, abs=1e-12)


def test_ssim_constant_images_closed_form_inside_and_zero_padding_at_border():
    """Constant images p, q: SSIM = (2pq + C1) / (p^2 + q^2 + C1) wherever the window is inside."""
    p, q, c1 = 0.7, 0.3, 0.01**2
    expected = (2 * p * q + c1) / (p * p + q * q + c1)
    a = torch.full((20, 26, 3), p, dtype=torch.float64)
    b = torch.full((20, 26, 3), q, dtype=torch.float64)
    assert ssim(a, b, "skimage").item() == pytest.approx(expected, abs=1e-12)
    m = ssim_map(a, b, "3dgs")
    assert m.shape == (1, 3, 20, 26)
    assert torch.allclose(m[..., 5:-5, 5:-5], torch.full_like(m[..., 5:-5, 5:-5], expected))
    # zero padding pulls border means towards 0 and creates variance there: border differs
    assert (m[..., 0, :] - expected).abs().min().item() > 1e-3
    assert abs(ssim(a, b, "3dgs").item() - expected) > 1e-3


def test_ssim_3dgs_interior_equals_skimage_map_border_differs():
    a, b = _random_pair(32, 29, seed=11)
    full = ssim_map(a, b, "3dgs")
    valid = ssim_map(a, b, "skimage")
    assert valid.shape == (1, 3, 22, 19)
    assert torch.allclose(full[..., 5:-5, 5:-5], valid, atol=1e-12)
    assert abs(ssim(a, b, "3dgs").item() - ssim(a, b, "skimage").item()) > 1e-4


def test_ssim_loss_gradients_flow():
    a, b = _random_pair(20, 24, seed=5, dtype=torch.float32)
    pred = a.clone().requires_grad_(True)
    loss = 1.0 - ssim(pred[None], b[None]).mean()
    loss.backward()
    assert loss.ndim == 0 and 0.0 < loss.item() < 1.0
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    # a small step against the gradient lowers the loss
    with torch.no_grad():
        stepped = 1.0 - ssim((pred - 1e-1 * pred.grad / pred.grad.abs().max())[None], b[None]).mean()
    assert stepped.item() < loss.item()


def test_ssim_rejects_bad_input():
    a, b = _random_pair(16, 16, seed=1)
    with pytest.raises(ValueError, match="shapes differ"):
        ssim(a, b[:-1])
    with pytest.raises(ValueError, match="channels-last"):
        ssim(a.permute(2, 0, 1).repeat(3, 1, 1), b.permute(2, 0, 1).repeat(3, 1, 1))
    with pytest.raises(ValueError, match="convention"):
        ssim(a, b, "matlab")
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(a[:8, :8], b[:8, :8], "skimage")


def test_psnr_matches_hand_computation():
    a, b = _random_pair(17, 19, seed=2, dtype=torch.float32)
    mse = float(np.mean((a.numpy().astype(np.float64) - b.numpy().astype(np.float64)) ** 2))
    assert psnr(a, b).shape == (1,)
    assert psnr(a, b).item() == pytest.approx(10 * math.log10(1.0 / mse), abs=1e-4)
    batch = psnr(torch.stack([a, b]), torch.stack([b, b]))
    assert batch[0].item() == pytest.approx(10 * math.log10(1.0 / mse), abs=1e-4)
    assert math.isinf(batch[1].item())
    # uint8 input is scaled by 1/255: a one-level difference everywhere gives 20*log10(255)
    u = torch.full((4, 5, 3), 100, dtype=torch.uint8)
    assert psnr(u, u + 1).item() == pytest.approx(20 * math.log10(255.0), abs=1e-4)


def test_evaluate_images_rows_chunking_and_inputs():
    pairs = [_random_pair(14, 18, seed=s, dtype=torch.float32) for s in range(5)]
    preds = torch.stack([p[0] for p in pairs])
    gts = torch.stack([p[1] for p in pairs])
    rows = evaluate_images(preds, gts, None, chunk_size=2)
    assert len(rows) == 5
    assert set(rows[0]) == {"psnr", "ssim", "ssim_skimage"}
    for i, row in enumerate(rows):
        assert row["psnr"] == pytest.approx(psnr(preds[i], gts[i]).item(), abs=1e-5)
        assert row["ssim"] == pytest.approx(ssim(preds[i], gts[i]).item(), abs=1e-6)
        assert row["ssim_skimage"] == pytest.approx(_skimage_ssim(preds[i], gts[i]), abs=1e-4)
    as_lists = evaluate_images(list(preds), list(gts), None, chunk_size=3)
    assert len(as_lists) == 5
    for r1, r2 in zip(as_lists, rows, strict=True):
        assert r1 == pytest.approx(r2, abs=1e-6)
    # uint8 ground truth is accepted and scaled by 1/255
    gts8 = (gts * 255).round().to(torch.uint8)
    rows8 = evaluate_images(preds, gts8, None)
    assert rows8[0]["psnr"] == pytest.approx(psnr(preds[0], gts8[0].float() / 255).item(), abs=1e-5)


def test_evaluate_images_clamps_quantizes_and_skips_small_skimage():
    gt = torch.ones(1, 12, 12, 3)
    rows = evaluate_images(gt + 0.5, gt, None)
    assert math.isinf(rows[0]["psnr"]) and rows[0]["ssim"] == pytest.approx(1.0)
    # an 8-bit ground truth (level 100) and a render 0.4 levels off: rounding removes the error
    gt8 = torch.full((1, 12, 12, 3), 100, dtype=torch.uint8)
    pred = torch.full((1, 12, 12, 3), 100.4 / 255)
    exact = evaluate_images(pred, gt8, None)[0]["psnr"]
    quant = evaluate_images(pred, gt8, None, quantize=True)[0]["psnr"]
    assert math.isfinite(exact) and math.isinf(quant)
    small = evaluate_images(torch.rand(2, 8, 8, 3), torch.rand(2, 8, 8, 3), None)
    assert "ssim_skimage" not in small[0] and "ssim" in small[0]
    with pytest.raises(ValueError, match="2 predictions but 1"):
        evaluate_images(torch.rand(2, 8, 8, 3), torch.rand(1, 8, 8, 3), None)
    assert evaluate_images([], [], None) == []


def test_mean_metrics_uses_keys_present_everywhere():
    rows = [{"psnr": 30.0, "ssim": 0.9, "lpips": 0.1}, {"psnr": 32.0, "ssim": 0.8}]
    assert mean_metrics(rows) == pytest.approx({"psnr": 31.0, "ssim": 0.85})
    assert mean_metrics([]) == {}


# ----------------------------------------------------------------------------- LPIPS


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """Point torch hub's cache at an empty folder (no backbone weights anywhere)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    if not torch.hub.get_dir().startswith(str(tmp_path)):
        pytest.skip("torch hub dir was set explicitly elsewhere; cannot isolate its cache")
    return tmp_path


@pytest.fixture(scope="module")
def random_alexnet_file(tmp_path_factory):
    """A torchvision AlexNet with random init, saved as a checkpoint (not ImageNet weights)."""
    from torchvision import models

    torch.manual_seed(0)
    model = models.alexnet(weights=None)
    path = tmp_path_factory.mktemp("weights") / "random-alexnet.pth"
    torch.save(model.state_dict(), path)
    return path, {k: v.clone() for k, v in model.features.state_dict().items()}


@pytest.fixture(scope="module")
def random_lpips(random_alexnet_file):
    """An LPIPSMetric on the random AlexNet (built once: loading it takes seconds)."""
    path, _ = random_alexnet_file
    return LPIPSMetric("alex", weights=path, device="cpu", allow_unverified=True)


def test_lpips_without_weights_is_unavailable_and_says_why(empty_hub):
    metric = LPIPSMetric("alex", weights=None, device="cpu")
    assert not metric.available
    assert LPIPS_BACKBONE_FILES["alex"] in metric.reason
    assert "--lpips-weights" in metric.reason
    assert str(lpips_hub_path("alex")) in metric.reason
    img = torch.rand(1, 16, 16, 3)
    with pytest.raises(LPIPSUnavailableError, match="--lpips-weights"):
        metric(img, img)
    with pytest.raises(LPIPSUnavailableError, match="--lpips-weights"):
        metric(img, img, "lpips_3dgs")
    rows = evaluate_images(img, img, metric)
    assert "lpips" not in rows[0] and "lpips_3dgs" not in rows[0]
    notes = metric_notes(metric)
    assert notes["lpips"] == metric.reason
    # both conventions unavailable for the same reason; the 3DGS one still says what it is
    assert "unavailable" in notes["lpips_3dgs"] and metric.reason in notes["lpips_3dgs"]
    assert "3DGS" in notes["lpips_3dgs"] and "without mapping" in notes["lpips_3dgs"]
    assert "--lpips-weights" in metric_notes(None)["lpips"]
    assert "--lpips-weights" in metric_notes(None)["lpips_3dgs"]


def test_lpips_missing_weights_file_named(empty_hub):
    missing = empty_hub / "nowhere" / "vgg16-397923af.pth"
    metric = LPIPSMetric("vgg", weights=missing, device="cpu")
    assert not metric.available
    assert str(missing) in metric.reason and "--lpips-weights" in metric.reason


def test_lpips_rejects_unreadable_and_mismatched_files(empty_hub):
    garbage = empty_hub / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    metric = LPIPSMetric("alex", weights=garbage, device="cpu", allow_unverified=True)
    assert not metric.available and "could not be read" in metric.reason
    wrong = empty_hub / "wrong.pth"
    torch.save({"features.0.weight": torch.zeros(3, 3)}, wrong)
    metric = LPIPSMetric("alex", weights=wrong, device="cpu", allow_unverified=True)
    assert not metric.available and "does not match torchvision's AlexNet" in metric.reason


def test_lpips_unofficial_file_is_refused_by_default(random_alexnet_file):
    path, _ = random_alexnet_file
    metric = LPIPSMetric("alex", weights=path, device="cpu")
    assert not metric.available
    assert "sha256" in metric.reason and LPIPS_BACKBONE_FILES["alex"] in metric.reason


def test_lpips_loading_mechanism_with_random_backbone(random_alexnet_file, random_lpips):
    """Proves the weights reach the lpips backbone. Random weights: the values are NOT LPIPS."""
    _, features = random_alexnet_file
    metric = random_lpips
    assert metric.available, metric.reason
    assert not metric.verified and "UNVERIFIED" in metric.describe()
    backbone = metric._model.net
    assert torch.equal(backbone.slice1[0].weight, features["0.weight"])
    assert torch.equal(backbone.slice5._modules["10"].bias, features["10.bias"])

    gen = torch.Generator().manual_seed(1)
    a = torch.rand(2, 32, 40, 3, generator=gen)
    b = (a + 0.2 * torch.randn(a.shape, generator=gen)).clamp(0, 1)
    values = metric(a, b)
    assert values.shape == (2,) and torch.isfinite(values).all() and (values > 0).all()
    assert metric(a, a).abs().max().item() == pytest.approx(0.0, abs=1e-7)
    # inputs reach lpips scaled to [-1,1]: same as its own normalize=True path on [0,1] input
    ref = metric._model(a.permute(0, 3, 1, 2), b.permute(0, 3, 1, 2), normalize=True).flatten()
    assert torch.allclose(values, ref, atol=1e-6)
    rows = evaluate_images(a, b, metric, chunk_size=1)
    assert [r["lpips"] for r in rows] == pytest.approx(values.tolist(), abs=1e-6)


class _RecordingNet(torch.nn.Module):
    """Stand-in for the LPIPS network (tests only): records the two inputs of every call and
    returns the mean of the first per image, [B,1,1,1] like lpips."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.calls.append((x.clone(), y.clone()))
        return x.mean(dim=(1, 2, 3), keepdim=True)


def test_lpips_conventions_feed_the_network_as_named(random_alexnet_file, monkeypatch):
    """"lpips" sees [-1,1] inputs, "lpips_3dgs" the raw [0,1] ones, from the one network the
    metric built (the stand-in replaces the real one where the metric builds it)."""
    net = _RecordingNet()
    monkeypatch.setattr(metrics_module, "_build_lpips", lambda name, features: net)
    path, _ = random_alexnet_file
    metric = LPIPSMetric("alex", weights=path, device="cpu", allow_unverified=True)
    assert metric.available and metric._model is net
    gen = torch.Generator().manual_seed(3)
    a = 0.1 + 0.8 * torch.rand(2, 12, 14, 3, generator=gen)
    b = 0.1 + 0.8 * torch.rand(2, 12, 14, 3, generator=gen)
    a_chw, b_chw = a.permute(0, 3, 1, 2), b.permute(0, 3, 1, 2)

    metric(a, b, "lpips")
    x, y = net.calls[-1]
    assert torch.allclose(x, a_chw * 2 - 1) and torch.allclose(y, b_chw * 2 - 1)
    assert x.min() < 0  # mapped to [-1,1]
    metric(a, b, "lpips_3dgs")
    x, y = net.calls[-1]
    assert torch.equal(x, a_chw) and torch.equal(y, b_chw)  # [0,1], unmapped
    with pytest.raises(ValueError, match="lpips_3dgs"):
        metric(a, b, "lpips_vgg")

    # evaluate_images: each key holds its own convention's value, one network call each
    net.calls.clear()
    rows = evaluate_images(a, b, metric, chunk_size=1)
    assert len(net.calls) == 2 * len(a)
    for i, row in enumerate(rows):
        assert row["lpips"] == pytest.approx((a[i] * 2 - 1).mean().item(), abs=1e-6)
        assert row["lpips_3dgs"] == pytest.approx(a[i].mean().item(), abs=1e-6)
    notes = metric_notes(metric)
    assert set(LPIPS_CONVENTIONS) <= set(notes)
    assert "[-1,1]" in notes["lpips"] and "official" in notes["lpips"]
    assert "without mapping" in notes["lpips_3dgs"] and "MoE-GS paper" in notes["lpips_3dgs"]


def _lpips_3dgs_reference(lins, alex, x, y) -> float:
    """3DGS's lpipsPyTorch written out for one pair [1,3,H,W] fed as given, on AlexNet feature
    layers `alex`: z-score with its constants, ReLU outputs of features 1, 4, 7, 9, 11 with
    unit-normalised channels, squared difference, the v0.1 linear layers `lins` (1x1
    convolution weights), spatial mean, sum."""
    mean = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    std = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def feats(t):
        t, out = (t - mean) / std, []
        for i, layer in enumerate(alex, 1):
            t = layer(t)
            if i in (2, 5, 8, 10, 12):
                out.append(t / (t.square().sum(1, keepdim=True).sqrt() + 1e-10))
            if len(out) == 5:  # lpipsPyTorch stops at its last target layer
                return out
        return out

    with torch.no_grad():
        pairs = zip(feats(x), feats(y), lins, strict=True)
        parts = [F.conv2d((fx - fy) ** 2, w).mean() for fx, fy, w in pairs]
    return float(sum(parts))


def test_lpips_3dgs_equals_the_3dgs_computation(random_alexnet_file, random_lpips):
    """With a random backbone (values NOT LPIPS): "lpips_3dgs" is what 3DGS's metrics.py gets
    from lpipsPyTorch on [0,1] images, and differs from the official convention."""
    from torchvision import models

    _, features = random_alexnet_file
    metric = random_lpips
    assert metric.available, metric.reason
    alex = models.alexnet(weights=None).features
    alex.load_state_dict(features)
    lins = [lin.model[-1].weight for lin in metric._model.lins]
    gen = torch.Generator().manual_seed(2)
    a = torch.rand(2, 32, 40, 3, generator=gen)
    b = (a + 0.2 * torch.randn(a.shape, generator=gen)).clamp(0, 1)
    got = metric.distances(a, b)
    for i in range(len(a)):
        x, y = a[i : i + 1].permute(0, 3, 1, 2), b[i : i + 1].permute(0, 3, 1, 2)
        expected = _lpips_3dgs_reference(lins, alex, x, y)
        assert got["lpips_3dgs"][i].item() == pytest.approx(expected, rel=1e-4, abs=1e-6)
        # the official convention is the same computation on [-1,1] inputs
        official = _lpips_3dgs_reference(lins, alex, x * 2 - 1, y * 2 - 1)
        assert got["lpips"][i].item() == pytest.approx(official, rel=1e-4, abs=1e-6)
    assert not torch.allclose(got["lpips"], got["lpips_3dgs"], rtol=1e-2)
