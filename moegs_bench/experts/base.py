"""The Expert protocol: a trainable model that yields `Gaussians` for a time t.

Everything downstream (renderer, loop, routers, metrics) only calls `gaussians_at`; the
training loop also uses the parameter split below:
  per-Gaussian parameters  -> one optimiser each, densified by the strategy with the means;
  shared parameters        -> MLPs, grids, tables (never densified).
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from ..config import (
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    UnitFloat,
    from_dict,
    to_dict,
)
from ..data.init import InitData
from ..data.load import SceneData
from ..data.sampling import Sampler, ViewSampler
from ..io import load_torch, save_torch
from ..render.gaussians import Gaussians


@dataclass
class DensifyConfig:
    """gsplat DefaultStrategy settings (3DGS defaults; REFERENCE.md §2 per expert)."""

    enabled: bool = True
    start: NonNegativeInt = 500
    stop: NonNegativeInt = 15_000
    every: PositiveInt = 100
    grad_threshold: NonNegativeFloat = 2e-4
    prune_opacity: UnitFloat = 0.005
    grow_scale3d: NonNegativeFloat = 0.01
    prune_scale3d: PositiveFloat = 0.1
    reset_every: NonNegativeInt = 3000  # opacity reset period; 0 disables (done explicitly: gsplat 1.5.3 never resets)


@dataclass
class TrainConfig:
    """Generic loop settings shared by every expert."""

    iterations: PositiveInt = 30_000
    batch_size: PositiveInt = 1  # views per step
    same_time: bool = False  # batch views of one frame (STG) instead of random views
    ssim_lambda: UnitFloat = 0.2  # loss (1-λ)·L1 + λ·D-SSIM
    random_background: bool = False
    background: tuple[UnitFloat, UnitFloat, UnitFloat] = (0.0, 0.0, 0.0)
    checkpoint_every: NonNegativeInt = 2000  # resumable state every N steps (0: never)
    # float32 CUDA matmuls while training: "highest" is IEEE fp32 as the original
    # implementations; "high" lets deformation MLPs use TF32 tensor cores
    matmul_precision: Literal["highest", "high"] = "highest"
    densify: DensifyConfig = field(default_factory=DensifyConfig)


class Expert(nn.Module, metaclass=ABCMeta):
    """Base class. Subclasses set `name`, `Config` (a dataclass with a `train: TrainConfig`
    field, and `sh_degree` / `sh_degree_interval` for SH colours) and implement `from_init`,
    `gaussians_at`, `learning_rates`."""

    name: ClassVar[str] = "expert"
    Config: ClassVar[type] = object
    # True when gaussians_at depends on the camera (e.g. per-camera time offsets): the loop
    # then rasterises each view separately instead of all views of one time together
    camera_dependent: ClassVar[bool] = False

    def __init__(self, config: Any):
        super().__init__()
        self.config = config
        self.params = nn.ParameterDict()  # per-Gaussian tensors, rows aligned with Gaussians
        self.active_sh_degree = 0  # SH bands in use: one more every `sh_degree_interval` steps
        self._inference: tuple | None = None  # (key, time-invariant tensors) of the inference path

    # -- construction ----------------------------------------------------------------------
    @classmethod
    @abstractmethod
    def from_init(cls, init: InitData, config, generator: torch.Generator | None = None) -> Expert:
        """Initialise from a scene's point clouds, counts and extent (data.init.InitData)."""

    @classmethod
    def from_scene(cls, data: SceneData, config, generator: torch.Generator | None = None) -> Expert:
        """`from_init` with what a loaded scene offers."""
        return cls.from_init(InitData.from_scene(data), config, generator)

    # -- what the rest of the toolkit sees ----------------------------------------------------
    @abstractmethod
    def gaussians_at(self, t: float | Tensor, camera: int | None = None) -> Gaussians:
        """The Gaussians at normalised time t in [0,1) (camera: index, for per-camera terms)."""

    def gaussians_at_times(self, times, cameras=None) -> list[Gaussians]:
        """The Gaussians at several times (cameras: one index or None per time); experts
        whose deformation has a time-independent part override this to compute it once."""
        cameras = cameras if cameras is not None else [None] * len(times)
        return [self.gaussians_at(t, camera=c) for t, c in zip(times, cameras, strict=True)]

    @property
    def num_gaussians(self) -> int:
        return int(self.params["means"].shape[0])

    # -- inference ------------------------------------------------------------------------------
    # A frozen expert (every parameter requires_grad False, autograd off: the expert pool)
    # produces its Gaussians through `inference_gaussians`: what does not depend on t is
    # computed once (`build_inference_state`) and the per-t work is a few batched ops without
    # host synchronisation. Training never takes this path, so its numbers are untouched.
    def uses_inference_path(self) -> bool:
        """True when `gaussians_at` may take the cached inference path: autograd is off and no
        parameter of the expert requires a gradient, and the expert implements the path."""
        if torch.is_grad_enabled() or type(self).build_inference_state is Expert.build_inference_state:
            return False
        return not any(p.requires_grad for p in self.parameters())

    def freeze_for_inference(self) -> Expert:
        """eval(), every parameter frozen, and the inference state built now (not in the first
        frame). Returns self."""
        self.eval().requires_grad_(False)
        with torch.no_grad():
            self.inference_state()
        return self

    def inference_state(self) -> dict[str, Any]:
        """The time-invariant tensors of the inference path, rebuilt whenever a parameter or
        buffer was replaced or changed in place (its version counter moved) or a schedule
        setting (`inference_key`) changed."""
        key = (tuple((id(t), t.data_ptr(), t._version, tuple(t.shape))
                     for t in chain(self.parameters(), self.buffers())), self.inference_key())
        if self._inference is None or self._inference[0] != key:
            self._inference = None  # free the old tensors before building the new ones
            with torch.no_grad():
                self._inference = (key, self.build_inference_state())
        return self._inference[1]

    def inference_key(self) -> tuple:
        """Non-tensor state the inference tensors depend on (schedules); experts extend it."""
        return (self.active_sh_degree,)

    def build_inference_state(self) -> dict[str, Any]:
        """Time-invariant tensors of `inference_gaussians` (experts that have the path)."""
        raise NotImplementedError(f"{type(self).__name__} has no inference path")

    def drop_inference_state(self) -> None:
        """Free the cached inference tensors (rebuilt on the next inference call)."""
        self._inference = None

    # -- training hooks ------------------------------------------------------------------------
    def per_gaussian_params(self) -> nn.ParameterDict:
        return self.params

    def shared_params(self) -> dict[str, nn.Parameter]:
        return {}

    def shared_param_groups(self) -> dict[str, list[str]]:
        """Optimiser groups of the shared parameters: {group: member names}, members on one
        learning-rate schedule (the group follows its first member's rate). Fewer groups,
        fewer optimiser launches per step. Default: one group per parameter."""
        return {name: [name] for name in self.shared_params()}

    @abstractmethod
    def learning_rates(self, step: int, extent: float) -> dict[str, float]:
        """Learning rate of every parameter (per-Gaussian and shared) at `step`."""

    def regularisation(self, step: int) -> Tensor | None:
        """Extra loss terms at `step` (None: none)."""
        return None

    def photometric_weighting(self, step: int) -> tuple[float, float]:
        """(w, λ) of the photometric loss w·((1-λ)·L1 + λ·D-SSIM) at `step`. Default: (1,
        train.ssim_lambda) on every step; experts whose original adds SSIM on some steps only
        override it."""
        return 1.0, self.config.train.ssim_lambda

    def make_sampler(self, data: SceneData, seed: int) -> Sampler:
        """The sampler of the training views (data.sampling). Default: `ViewSampler` with
        train.batch_size and train.same_time; experts with their own protocol override it."""
        cfg = self.config.train
        return ViewSampler(data.splits["train"], cfg.batch_size, cfg.same_time, seed)

    def on_step(self, step: int) -> None:
        """Schedules that change the model: here the SH degree (3DGS's schedule); experts add
        theirs (coarse->fine, progressive frames, ...) and call this one."""
        interval = getattr(self.config, "sh_degree_interval", None)
        if interval is not None:
            self.active_sh_degree = min(self.config.sh_degree, step // max(interval, 1))

    def active_frames(self, step: int, num_frames: int) -> int:
        """Training sees frames [0, active_frames) at `step` (progressive training)."""
        return num_frames

    def decode(self, rendered: Tensor, viewmats: Tensor, Ks: Tensor, t: Tensor) -> Tensor:
        """Turn rasterised colour channels [C,H,W,D] into RGB [C,H,W,3] (per-pixel decoders,
        e.g. STG's feature MLP). Default: the channels already are RGB."""
        return rendered

    @property
    def decodes_pixels(self) -> bool:
        """True when `decode` is not the identity (splatted features need a per-pixel decoder)."""
        return False

    def strategy_settings(self) -> dict:
        """gsplat DefaultStrategy keyword arguments from this expert's `train.densify`
        (strategy subclasses of experts start from these too)."""
        d = self.config.train.densify
        return {
            "prune_opa": d.prune_opacity,
            "grow_grad2d": d.grad_threshold,
            "grow_scale3d": d.grow_scale3d,
            "prune_scale3d": d.prune_scale3d,
            "refine_start_iter": d.start,
            "refine_stop_iter": d.stop if d.enabled else 0,
            "refine_every": d.every,
            "reset_every": d.reset_every if d.reset_every > 0 else 10**9,
        }

    def make_strategy(self):
        """The densification strategy (a gsplat Strategy). Default: gsplat's DefaultStrategy
        with `strategy_settings()`; experts with their own rules override."""
        from gsplat.strategy import DefaultStrategy

        return DefaultStrategy(**self.strategy_settings())

    def after_step(self, step: int, ctx) -> None:
        """Called once per step after the optimisers and the strategy ran, with a
        `train.loop.StepContext` (optimisers, strategy state, renders, images). Experts that
        add, convert or re-initialise Gaussians outside the strategy do it here, keeping
        optimiser state aligned (see `optim.densify`)."""

    def on_densify(self) -> None:
        """Called after the number of Gaussians changed (caches keyed by N, neighbour lists)."""

    # -- persistence ------------------------------------------------------------------------------
    def checkpoint(self) -> dict:
        return {
            "name": self.name,
            "config": to_dict(self.config),
            "params": {k: v.detach().cpu() for k, v in self.params.items()},
            "shared": {k: v.detach().cpu() for k, v in self.shared_params().items()},
            "extra": self.extra_state(),
        }

    def extra_state(self) -> dict:
        """Non-parameter state kept across save/load (subclasses add theirs to this)."""
        return {"active_sh_degree": self.active_sh_degree}

    def load_extra_state(self, state: dict) -> None:
        self.active_sh_degree = int(state.get("active_sh_degree", getattr(self.config, "sh_degree", 0)))

    def load_checkpoint(self, ckpt: dict) -> None:
        """Replace parameters with those of `ckpt` (sizes may differ: densification)."""
        device = next(iter(self.params.values())).device if len(self.params) else torch.device("cpu")
        for k, v in ckpt["params"].items():
            self.params[k] = nn.Parameter(v.to(device), requires_grad=True)
        shared = self.shared_params()
        for k, v in ckpt.get("shared", {}).items():
            with torch.no_grad():
                shared[k].data = v.to(shared[k].device)
        self.load_extra_state(ckpt.get("extra", {}))

    def save(self, path: str | Path) -> Path:
        return save_torch(path, self.checkpoint())

    @classmethod
    def load(cls, path: str | Path, device: torch.device) -> Expert:
        return cls.from_checkpoint(load_torch(path), device)

    @classmethod
    def from_checkpoint(cls, ckpt: dict, device: torch.device) -> Expert:
        """An expert from what `checkpoint()` returned, on `device`."""
        expert = cls.empty(from_dict(cls.Config, ckpt["config"]), device)
        expert.load_checkpoint(ckpt)
        return expert.to(device)

    @classmethod
    def empty(cls, config, device: torch.device) -> Expert:
        """An expert with the right structure and placeholder parameters (filled by load),
        all SH bands active (a loaded model is a trained one)."""
        expert = cls(config).to(device)
        expert.active_sh_degree = getattr(config, "sh_degree", 0)
        return expert


@contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """`model` (an expert, or a module of experts such as a segmented one) as a deployed model
    runs, for the body of the `with`: eval mode, no parameter requiring a gradient, so that its
    experts take their inference path (as in a mixture's expert pool). Afterwards the
    parameters' requires_grad flags and the training mode are as before, and the inference
    tensors built meanwhile are freed."""
    flags = [p.requires_grad for p in model.parameters()]
    training = model.training
    model.eval().requires_grad_(False)
    try:
        yield model
    finally:
        for param, flag in zip(model.parameters(), flags, strict=True):
            param.requires_grad_(flag)
        model.train(training)
        for module in model.modules():
            if isinstance(module, Expert):
                module.drop_inference_state()
