"""Image metrics computed in one place for every method: PSNR, SSIM (two conventions), LPIPS.

Conventions follow shared REFERENCE.md §4 and docs/metrics.md:
- images are channels-last float tensors in [0,1], [B,H,W,C] or [H,W,C] (C = 1..4);
- PSNR uses the MSE over all pixels and channels of one image;
- SSIM "3dgs" is the 3DGS `ssim()` (11x11 Gaussian window, sigma 1.5, zero-padded 'same'
  convolution, mean over the whole map and the channels); SSIM "skimage" equals
  `skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1.0, channel_axis=-1)`;
- LPIPS runs the `lpips` package with ImageNet backbone weights loaded from a local file, in two
  input conventions of the same network: "lpips" (official: [0,1] images mapped to [-1,1]) and
  "lpips_3dgs" (the 3DGS-family evaluation code: [0,1] images fed unmapped; the MoE-GS paper's
  LPIPS); when the weights are missing both are unavailable and never return a number.
"""

from __future__ import annotations

import hashlib
import math
import re
import warnings
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ..device import resolve_device
from ..errors import MoegsError

SsimConvention = Literal["3dgs", "skimage"]
SSIM_CONVENTIONS: tuple[str, ...] = ("3dgs", "skimage")

# SSIM constants of Wang et al. 2004, as used by 3DGS and skimage (REFERENCE.md §4)
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03

# torchvision ImageNet checkpoints that the lpips backbones were trained on (file names as
# torch hub stores them; the 8 hex digits are the start of the file's sha256)
LPIPS_BACKBONE_FILES: dict[str, str] = {
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
}
LPIPS_BACKBONE_URL = "https://download.pytorch.org/models/"
LPIPS_WEIGHTS_OPTION = "--lpips-weights"

# result key -> how that convention feeds [0,1] images to the one LPIPS network (REFERENCE.md §4):
# the official `lpips` maps them to [-1,1]; 3DGS metrics.py + lpipsPyTorch (copied by STG and
# MoE-GS) pass them unmapped (gaussian-splatting issue #1239), which the paper's LPIPS used
LPIPS_CONVENTIONS: dict[str, str] = {
    "lpips": "official lpips convention: [0,1] images mapped to [-1,1] (lpips normalize=True)",
    "lpips_3dgs": "3DGS-family convention: [0,1] images fed to the network without mapping to "
    "[-1,1], as 3DGS metrics.py / lpipsPyTorch do (copied by STG and MoE-GS; gaussian-splatting "
    "issue #1239); the convention of the MoE-GS paper's LPIPS",
}


# ----------------------------------------------------------------------------- input handling


def _as_image_batch(x: Tensor, name: str) -> Tensor:
    """[H,W,C] or [B,H,W,C] (float, or uint8 scaled by 1/255) -> float [B,H,W,C]."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4 or not 1 <= x.shape[-1] <= 4:
        raise ValueError(
            f"{name}: expected a channels-last image [H,W,C] or [B,H,W,C] with C in 1..4, "
            f"got shape {tuple(x.shape)}"
        )
    if x.dtype == torch.uint8:
        return x.float() / 255.0
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a float or uint8 image, got {x.dtype}")
    return x


def _pair(pred: Tensor, gt: Tensor) -> tuple[Tensor, Tensor]:
    """Check and batch a (prediction, ground truth) pair; both float [B,H,W,C], same dtype."""
    p, g = _as_image_batch(pred, "pred"), _as_image_batch(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"pred and gt shapes differ: {tuple(p.shape)} vs {tuple(g.shape)}")
    if p.device != g.device:
        raise ValueError(f"pred and gt are on different devices: {p.device} vs {g.device}")
    dtype = torch.promote_types(p.dtype, g.dtype)
    return p.to(dtype), g.to(dtype)


# ----------------------------------------------------------------------------- PSNR


def psnr(pred: Tensor, gt: Tensor) -> Tensor:
    """Peak signal-to-noise ratio in dB for peak 1.0, one value per image.

    pred, gt: [B,H,W,C] or [H,W,C] in [0,1]. Returns [B] (inf where the images are equal).
    """
    p, g = _pair(pred, gt)
    mse = (p - g).square().flatten(1).mean(dim=1)
    return 10.0 * torch.log10(1.0 / mse)


# ----------------------------------------------------------------------------- SSIM


@lru_cache(maxsize=16)
def _gaussian_1d_cpu(size: int, sigma: float) -> Tensor:
    """Normalised 1D Gaussian of `size` taps centred on size // 2 (float64, CPU) -> [size]."""
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


def _gaussian_1d(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    return _gaussian_1d_cpu(size, sigma).to(dtype=dtype, device=device)


def _separable_blur(x: Tensor, pad: int) -> Tensor:
    """Gaussian-blur every channel of x [B,K,H,W] with the SSIM window; zero padding `pad`.

    pad = window // 2 gives the 'same' map of a zero-padded 2D convolution (3DGS); pad = 0
    gives the 'valid' map. Separable because the 2D window is the outer product of the 1D one,
    and zero padding keeps the two 1D passes exactly equal to one 2D pass.
    """
    k = x.shape[1]
    g = _gaussian_1d(SSIM_WINDOW, SSIM_SIGMA, x.dtype, x.device)
    # depthwise (grouped) convolution: each channel blurred on its own
    x = F.conv2d(x, g.view(1, 1, 1, -1).expand(k, 1, 1, -1), padding=(0, pad), groups=k)
    return F.conv2d(x, g.view(1, 1, -1, 1).expand(k, 1, -1, 1), padding=(pad, 0), groups=k)


def ssim_map(pred: Tensor, gt: Tensor, convention: SsimConvention = "3dgs") -> Tensor:
    """Per-pixel SSIM map, differentiable.

    pred, gt: [B,H,W,C] or [H,W,C] in [0,1]. Returns [B,C,H',W']: H' = H, W' = W for "3dgs";
    H' = H - 10, W' = W - 10 for "skimage" (skimage drops a border of (11-1)//2 pixels, where
    its reflect-padded filter would see outside the image; the cropped region needs no padding).
    """
    if convention not in SSIM_CONVENTIONS:
        raise ValueError(f"ssim convention must be one of {SSIM_CONVENTIONS}, got {convention!r}")
    p, g = _pair(pred, gt)
    b, h, w, c = p.shape
    if convention == "skimage" and min(h, w) < SSIM_WINDOW:
        raise ValueError(
            f"ssim(convention='skimage') needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} "
            f"pixels, got {h}x{w}"
        )
    pad = SSIM_WINDOW // 2 if convention == "3dgs" else 0
    # contiguous NCHW: a channels-last layout sends the depthwise convolution to a slow kernel
    x = p.permute(0, 3, 1, 2).contiguous()
    y = g.permute(0, 3, 1, 2).contiguous()
    # one convolution call for the five local moments of every channel
    moments = _separable_blur(torch.cat([x, y, x * x, y * y, x * y], dim=1), pad)  # [B,5C,..]
    mu_x, mu_y, e_xx, e_yy, e_xy = moments.split(c, dim=1)
    var_x = e_xx - mu_x * mu_x
    var_y = e_yy - mu_y * mu_y
    cov_xy = e_xy - mu_x * mu_y
    c1, c2 = SSIM_K1**2, SSIM_K2**2  # data range 1.0
    num = (2.0 * mu_x * mu_y + c1) * (2.0 * cov_xy + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    return num / den


def ssim(pred: Tensor, gt: Tensor, convention: SsimConvention = "3dgs") -> Tensor:
    """Mean SSIM per image, differentiable. pred, gt: [B,H,W,C] or [H,W,C]. Returns [B].

    Every channel has the same number of map pixels, so the mean over the map and channels
    equals skimage's mean of per-channel means.
    """
    return ssim_map(pred, gt, convention).flatten(1).mean(dim=1)


# ----------------------------------------------------------------------------- LPIPS


class LPIPSUnavailableError(MoegsError):
    """LPIPS was asked for a value but its backbone weights are not available."""


class _WeightsProblem(Exception):
    """Why a backbone weights file cannot be used (message is the user-facing reason)."""


def lpips_hub_path(net: str) -> Path:
    """Where torch hub caches the torchvision backbone checkpoint for `net` ("alex"/"vgg")."""
    return Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_BACKBONE_FILES[net]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _official_hash_prefix(net: str) -> str:
    """The sha256 prefix that torchvision encodes in its checkpoint name, e.g. '7be5be79'."""
    match = re.search(r"-([0-9a-f]+)\.pth$", LPIPS_BACKBONE_FILES[net])
    assert match is not None, "LPIPS_BACKBONE_FILES names end in -<hash>.pth"
    return match.group(1)


def _torchvision_features(net: str) -> torch.nn.Module:
    """The untrained feature layers of torchvision's AlexNet / VGG16 (what lpips uses)."""
    from torchvision import models

    return (models.alexnet(weights=None) if net == "alex" else models.vgg16(weights=None)).features


def _read_backbone_state(path: Path, net: str) -> dict[str, Tensor]:
    """Load a torchvision checkpoint, check its feature layers fit the architecture.

    Returns the 'features.<i>.<param>' tensors (the classifier is not used by LPIPS).
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file makes the metric unavailable, not a crash
        raise _WeightsProblem(f"{path} could not be read as a torch checkpoint ({exc})") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise _WeightsProblem(f"{path} is not a state dict of tensors")
    features = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
    layers = _torchvision_features(net)
    arch = "AlexNet" if net == "alex" else "VGG16"
    try:
        layers.load_state_dict(features, strict=True)
    except RuntimeError as exc:
        lines = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in lines[:3])[:300]
        raise _WeightsProblem(f"{path} does not match torchvision's {arch} ({detail})") from exc
    return {"features." + k: v for k, v in layers.state_dict().items()}


def lpips_network_input(images: Tensor, key: str) -> Tensor:
    """What LPIPS convention `key` feeds the network.

    In: images [B,H,W,3] in [0,1]; key "lpips" or "lpips_3dgs" (LPIPS_CONVENTIONS).
    Out: [B,3,H,W], mapped to [-1,1] for "lpips", the unchanged [0,1] values for "lpips_3dgs".
    """
    x = images.permute(0, 3, 1, 2)
    if key == "lpips":
        return x * 2.0 - 1.0
    if key == "lpips_3dgs":
        return x  # 3DGS metrics.py passes to_tensor()'s [0,1] images straight to lpipsPyTorch
    raise ValueError(f"LPIPS convention must be one of {list(LPIPS_CONVENTIONS)}, got {key!r}")


def _build_lpips(net: str, features: dict[str, Tensor]) -> torch.nn.Module:
    """lpips.LPIPS with its shipped linear layers and the given backbone 'features.*' tensors."""
    import lpips

    with warnings.catch_warnings():
        # lpips passes torchvision's deprecated `pretrained=` flag; harmless with pnet_rand=True
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
    # lpips keeps torchvision's feature layers under their index: net.slice<k>.<i> = features.<i>
    mapped: dict[str, Tensor] = {}
    for key in model.state_dict():
        m = re.match(r"net\.slice\d+\.(\d+\..+)$", key)
        if m:
            mapped[key] = features["features." + m.group(1)]
    missing = model.load_state_dict(mapped, strict=False).missing_keys
    left = [k for k in missing if k.startswith("net.")]
    if left:
        raise _WeightsProblem(f"backbone tensors not found for {left[:3]}")
    return model.eval().requires_grad_(False)


class LPIPSMetric:
    """LPIPS (v0.1, linear layers shipped with `lpips`) with a local ImageNet backbone.

    net: "alex" (default for MoE-GS tables, REFERENCE.md §4) or "vgg".
    weights: a torchvision checkpoint file (alexnet-owt-7be5be79.pth / vgg16-397923af.pth);
      None looks in torch hub's cache (`lpips_hub_path(net)`).
    allow_unverified: accept a file whose sha256 does not start with the hash in torchvision's
      official file name (the values are then not comparable with published LPIPS).
    After construction `available` says whether values can be computed; if not, `reason` says
    why (naming the missing file and the --lpips-weights option) and calls raise.
    One network gives both conventions of LPIPS_CONVENTIONS ("lpips", "lpips_3dgs"); they
    differ only in how the images are fed to it (`lpips_network_input`).
    """

    def __init__(
        self,
        net: str = "alex",
        weights: str | Path | None = None,
        device: str | torch.device | None = None,
        allow_unverified: bool = False,
    ):
        if net not in LPIPS_BACKBONE_FILES:
            raise ValueError(
                f"LPIPS net must be one of {sorted(LPIPS_BACKBONE_FILES)}, got {net!r}"
            )
        self.net = net
        self.device = resolve_device(None if device is None else str(device))
        self.allow_unverified = allow_unverified
        self.weights_path: Path | None = None
        self.verified = False
        self.reason = ""
        self._model: torch.nn.Module | None = None
        try:
            self.weights_path = self._locate(weights)
            self.verified = self._verify(self.weights_path)
            features = _read_backbone_state(self.weights_path, net)
            self._model = _build_lpips(net, features).to(self.device)
        except _WeightsProblem as exc:
            self.reason = f"LPIPS ({net}) unavailable: {exc}"

    @property
    def available(self) -> bool:
        return self._model is not None

    @property
    def name(self) -> str:
        return f"lpips_{self.net}"

    def _locate(self, weights: str | Path | None) -> Path:
        official = LPIPS_BACKBONE_FILES[self.net]
        how = (
            f"download {LPIPS_BACKBONE_URL}{official} and pass {LPIPS_WEIGHTS_OPTION} PATH "
            f"or place it at {lpips_hub_path(self.net)}"
        )
        if weights is not None:
            path = Path(weights).expanduser()
            if not path.is_file():
                raise _WeightsProblem(
                    f"backbone weights file {path} (given with {LPIPS_WEIGHTS_OPTION}) "
                    f"does not exist; {how}"
                )
            return path
        path = lpips_hub_path(self.net)
        if not path.is_file():
            raise _WeightsProblem(
                f"ImageNet backbone weights {official} not found: no {LPIPS_WEIGHTS_OPTION} "
                f"PATH was given and {path} does not exist (this machine does not download); "
                f"{how}"
            )
        return path

    def _verify(self, path: Path) -> bool:
        """True when the file is torchvision's official checkpoint (sha256 prefix matches)."""
        expected = _official_hash_prefix(self.net)
        digest = _sha256(path)
        if digest.startswith(expected):
            return True
        if self.allow_unverified:
            return False
        raise _WeightsProblem(
            f"{path} is not torchvision's {LPIPS_BACKBONE_FILES[self.net]} (sha256 starts with "
            f"{digest[:8]}, expected {expected}); values would not be LPIPS"
        )

    def describe(self, key: str = "lpips") -> str:
        """One line for reports on result key `key` ("lpips" or "lpips_3dgs"): what produced
        its numbers (network, convention, weights file), or why there are none."""
        convention = LPIPS_CONVENTIONS[key]
        if not self.available:
            return self.reason if key == "lpips" else f"{self.reason} [{convention}]"
        check = "sha256 verified" if self.verified else "UNVERIFIED file, not comparable"
        return f"LPIPS v0.1 ({self.net}), {convention}, backbone {self.weights_path} ({check})"

    def distances(
        self, pred: Tensor, gt: Tensor, keys: Sequence[str] = tuple(LPIPS_CONVENTIONS)
    ) -> dict[str, Tensor]:
        """LPIPS distance per image in each convention of `keys` (default both), one network.

        pred, gt: [B,H,W,3] or [H,W,3] in [0,1]. Out: key -> [B] on `self.device`; no
        gradients (a metric, not a loss). LPIPSUnavailableError without the backbone weights.
        """
        if self._model is None:
            raise LPIPSUnavailableError(self.reason)
        p, g = _pair(pred, gt)
        if p.shape[-1] != 3:
            raise ValueError(f"LPIPS needs RGB images (C=3), got C={p.shape[-1]}")
        p, g = p.to(self.device, torch.float32), g.to(self.device, torch.float32)
        out: dict[str, Tensor] = {}
        with torch.inference_mode():
            for key in keys:
                x, y = lpips_network_input(p, key), lpips_network_input(g, key)
                out[key] = self._model(x, y).flatten()
        return out

    def __call__(self, pred: Tensor, gt: Tensor, key: str = "lpips") -> Tensor:
        """LPIPS distance per image in convention `key` (default the official "lpips").

        pred, gt: [B,H,W,3] or [H,W,3] in [0,1]. Returns [B] (see `distances`).
        """
        return self.distances(pred, gt, (key,))[key]


# ----------------------------------------------------------------------------- evaluation


def _stack_chunk(images: Tensor | Sequence[Tensor], start: int, stop: int) -> Tensor:
    """Images start..stop of a [N,H,W,C] tensor or of a sequence of [H,W,C] tensors."""
    if isinstance(images, Tensor):
        return images[start:stop]
    return torch.stack([torch.as_tensor(im) for im in images[start:stop]])


def _prepare_pred(pred: Tensor, quantize: bool) -> Tensor:
    """Renders can overshoot [0,1]; the displayed image is clamped (and optionally 8-bit)."""
    pred = pred.clamp(0.0, 1.0)
    return torch.round(pred * 255.0) / 255.0 if quantize else pred


def evaluate_images(
    preds: Tensor | Sequence[Tensor],
    gts: Tensor | Sequence[Tensor],
    lpips: LPIPSMetric | None = None,
    *,
    chunk_size: int = 4,
    device: str | torch.device | None = None,
    quantize: bool = False,
) -> list[dict[str, float]]:
    """Metrics of every (rendered, ground-truth) image pair.

    preds, gts: [N,H,W,3] tensors or sequences of [H,W,3] tensors (float in [0,1] or uint8).
    lpips: an LPIPSMetric; None or unavailable -> rows have no "lpips" / "lpips_3dgs" keys.
    chunk_size: images moved to `device` and measured at once (bounds memory for big images).
    device: where to compute (default: that of the first prediction).
    quantize: round predictions to 8 bits first, as metrics read back from saved PNGs see them.
    Returns one dict per image: psnr, ssim ("3dgs"), ssim_skimage (omitted for images smaller
    than 11x11), lpips (official convention) and lpips_3dgs (3DGS-family convention).
    """
    n = len(preds)
    if n != len(gts):
        raise ValueError(f"evaluate_images: {n} predictions but {len(gts)} ground-truth images")
    if chunk_size < 1:
        raise ValueError(f"evaluate_images: chunk_size must be >= 1, got {chunk_size}")
    if n == 0:
        return []
    dev = torch.device(device) if device is not None else torch.as_tensor(preds[0]).device
    use_lpips = lpips is not None and lpips.available
    rows: list[dict[str, float]] = []
    with torch.no_grad():
        for start in range(0, n, chunk_size):
            stop = min(start + chunk_size, n)
            p, g = _pair(
                _stack_chunk(preds, start, stop).to(dev), _stack_chunk(gts, start, stop).to(dev)
            )
            p = _prepare_pred(p, quantize)
            cols: dict[str, Tensor] = {"psnr": psnr(p, g), "ssim": ssim(p, g, "3dgs")}
            if min(p.shape[1:3]) >= SSIM_WINDOW:
                cols["ssim_skimage"] = ssim(p, g, "skimage")
            if use_lpips:
                cols.update(lpips.distances(p, g))
            values = {k: v.double().cpu().tolist() for k, v in cols.items()}
            rows.extend({k: values[k][i] for k in cols} for i in range(stop - start))
    return rows


def metric_notes(lpips: LPIPSMetric | None) -> dict[str, str]:
    """One note per metric name for reports: conventions, and why LPIPS is missing if it is.

    In: the run's LPIPSMetric or None. Out: metric -> text for psnr, ssim, ssim_skimage, lpips
    and lpips_3dgs (both LPIPS notes say "unavailable" when the backbone weights are missing).
    """
    notes = {
        "psnr": "10*log10(1/MSE), MSE over all pixels and channels of one image; predictions "
        "clamped to [0,1]",
        "ssim": "3DGS convention: 11x11 Gaussian window (sigma 1.5), zero-padded 'same' map, "
        "mean over all pixels and channels",
        "ssim_skimage": "skimage.metrics.structural_similarity(gaussian_weights=True, "
        "sigma=1.5, use_sample_covariance=False, data_range=1.0): 5-pixel border excluded",
    }
    if lpips is None:
        why = f"LPIPS not computed: no LPIPS metric was set up ({LPIPS_WEIGHTS_OPTION} PATH)"
        notes["lpips"] = why
        notes["lpips_3dgs"] = f"{why} [{LPIPS_CONVENTIONS['lpips_3dgs']}]"
    else:
        notes.update({key: lpips.describe(key) for key in LPIPS_CONVENTIONS})
    return notes


def mean_metrics(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    """Average of every metric present in all rows (the per-scene number of a table)."""
    if not rows:
        return {}
    keys = [k for k in rows[0] if all(k in r for r in rows)]
    return {k: math.fsum(r[k] for r in rows) / len(rows) for k in keys}
