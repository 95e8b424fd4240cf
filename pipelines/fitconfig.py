"""Configuration and results of `perfdata fit` (frozen dataclasses; a config round-trips through JSON)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perfdata.pipelines.semantic_config import SemanticConfig

from perfdata.configs import from_fields
from perfdata.errors import ConfigError

METHODS = ("plenoxel", "semantic", "generalizable")
BACKGROUNDS = ("auto", "white", "black", "learned", "msi", "ndc")
MSI_PIXELS = 4.0
"""The automatic MSI height is the images' larger side / MSI_PIXELS: a texel (180 / H degrees) then spans
720 / FOV pixels of a view whose larger side sees FOV degrees (18 for 40 degrees). Held-out PSNR by height on
the textured-backdrop object (100 px, 40-degree views, 48 frames, no masks; 150 s, benchmarks/real.py's fit):
16: 27.00, 24: 27.41, 32: 27.22, 48: 26.05, 64: 24.35, 128: 19.86 dB. Finer texels than the views pin down
paint what only the training rays check (likely worse with RMSProp, which moves a texel of tiny gradient as
far as one of large gradient); coarser ones blur the surroundings."""


@dataclass(frozen=True)
class FitConfig:
    """How to fit one scene. Defaults are tuned on lego 100x100 on a 2-core CPU (see benchmarks/fit.py)."""

    method: str = "plenoxel"
    """Field to fit: plenoxel, or semantic (plenoxel plus class logits, `semantic`)."""
    resolution: tuple[int, ...] = ()
    """Grid resolution per coarse-to-fine stage, e.g. (64, 128): fit at 64^3, then upsample to 128^3. Empty:
    from the image size, (R/2, R) with R the power of two >= the larger image side, clamped to [64, 256]."""
    upsample_at: tuple[float, ...] = (0.4,)
    """Progress fraction (of steps or of max_seconds, whichever runs out first) at which each upsample happens."""
    steps: int = 20000
    """Maximum optimisation steps."""
    max_seconds: float | None = None
    """Wall-clock budget of the optimisation (evaluation excluded); the fit then evaluates and saves."""
    batch_rays: int = 4096
    """Random training rays per step, drawn from all training pixels."""
    step_size: float = 0.5
    """Sample spacing along rays, in voxels of the current resolution."""
    density_init: float = 0.1
    """Initial raw density (per cube unit) of allocated voxels."""
    lr_density: float = 3.0
    """RMSProp learning rate of density at the start (decays exponentially to lr_density_final)."""
    lr_density_final: float = 0.3
    """RMSProp learning rate of density at the end."""
    lr_sh: float = 1e-2
    """RMSProp learning rate of SH coefficients at the start."""
    lr_sh_final: float = 1e-3
    """RMSProp learning rate of SH coefficients at the end."""
    rmsprop_beta: float = 0.95
    """RMSProp decay of the squared-gradient average."""
    density_bias_correction: bool | None = None
    """Bias-correct density's RMSProp average (`models.optim.SparseRMSProp`), so a stage's first steps move a
    density by ~lr_density instead of ~4.5 lr_density. None: automatic (`capture.auto_density_bias_correction`):
    on where the grid starts full or from a model (`init_from`; no depth; not NDC) and a training camera is within
    `capture.FOG_DISTANCE` (2.5) cube half-sizes of the cube's centre. There the big first steps fill the cube with fog in front
    of the lenses that the fit never clears: RGB-only synthetic objects on their ground stayed at ~10 dB, a
    mean-colour image, for the whole fit. Elsewhere they pay: lego 100 px, 300 s, 32.84 dB without, 32.32 with
    (README "Density's first steps")."""
    tv_density: float = 1e-5
    """Weight of squared-difference TV on density."""
    tv_sh: float = 1e-3
    """Weight of squared-difference TV on SH coefficients."""
    tv_fraction: float = 0.01
    """Fraction of allocated voxels that TV visits per step (a fresh random subset each step)."""
    distortion: float = 0.0
    """Weight of mip-NeRF 360's distortion loss, the batch mean of sum_ij w_i w_j |t_i - t_j| + (step / 3)
    sum_i w_i^2 over each ray's compositing weights w at cube distances t (`volrend.distortion_packed`): it
    gathers a ray's weight into one short interval, against fog and floaters (which also cost samples).
    0 (the default) leaves the choice to the capture: NDC fits take 3e-3 (`pipelines.fit.ndc_schedule`), MSI fits
    1e-2 (`msi_schedule`), masked objects 1e-2 from a final resolution of 256 on (`fine_object_schedule`),
    others none; any other value is used as given."""
    weight_thresh: float = 1e-4
    """SH colour is evaluated only at samples whose compositing weight exceeds this."""
    occupancy_every: int = 16
    """Steps between rebuilds of the occupancy used for empty-space skipping."""
    prune_alpha: float = 0.03
    """At an upsample, a voxel is kept only if its opacity over one voxel length, 1 - exp(-sigma * voxel), is
    above this; the kept voxels, dilated by one voxel of the new grid, are allocated there."""
    prune_weight: float = 0.0
    """If > 0, a kept voxel must also have had a sample next to it with a compositing weight above this since
    the last resolution change (drops occluded interiors; on lego it kept more floaters than it dropped)."""
    prune_visible: float | None = None
    """If > 0, at an upsample a kept voxel must also carry a compositing weight above this on some of
    `prune_visible_rays` random training rays (one render pass, no colour): drops what no camera sees, such as
    the occluded depths of a forward-facing scene. None: 0.01 with NDC (`background` ndc), else off."""
    prune_visible_rays: int = 131072
    """Training rays of that render pass."""
    max_voxels: int = 6_000_000
    """At an upsample, keep at most about this many voxels (the most opaque), bounding memory and step time."""
    depth_weight: float = 0.05
    """Weight of the L1 z-depth loss (normalised by the scene's median depth) on rays with known depth."""
    init_from_depth: bool = True
    """With depth: allocate only voxels near back-projected depth points (free space starts empty)."""
    background: str = "auto"
    """What lies behind the grid: white, black or learned (a constant colour), msi (multi-sphere layers
    outside the cube, for surroundings), or ndc (the grid itself reaches to infinity: it lies in the NDC space
    of the average camera, for forward-facing captures, `perfdata.models.ndc`). auto picks from the capture
    (`perfdata.pipelines.capture`): a known colour (masked / alpha frames) -> it; an object with its
    surroundings -> msi; a forward-facing capture -> ndc; a room -> learned."""
    ndc_depth_ratio: float = 0.5
    """With NDC: voxels along the depth axis per voxel along the image x axis (the y axis follows the image's
    aspect ratio), e.g. resolution 256 -> a 256 x 192 x 128 grid for 4:3 images."""
    ndc_margin: float | None = None
    """With NDC: how much wider than the reference camera's view the NDC box reaches, as a fraction of its half
    width and half height (sx and sy divided by 1 + ndc_margin), so that the rays of the other cameras, which
    look a little aside, stay inside the grid instead of leaving it sideways for the one background colour.
    None: automatic, the margin that keeps 99 % of the training rays inside between the depth bounds
    (`capture.auto_ndc_margin`; fern: 0.19)."""
    msi_layers: int = 16
    """MSI background: concentric layers (PeRFception's CO3D fits: 16)."""
    msi_height: int = 0
    """MSI background: texels per layer in latitude (longitude: twice as many); 0: automatic from the images
    (`resolved_msi_height`)."""
    lr_msi_colour: float = 0.1
    """RMSProp learning rate of the MSI colours at the start (decays tenfold by the end, as the grid's)."""
    lr_msi_density: float = 3.0
    """RMSProp learning rate of the MSI densities at the start."""
    msi_density_init: float = 0.1
    """Initial raw density (per cube unit) of every MSI texel."""
    tv_msi: float = 1e-3
    """Weight of squared-difference TV between neighbouring MSI texels."""
    mask_weight: float = 0.1
    """With an MSI and frames with foreground masks (CO3D's): weight of the squared error between the grid's
    opacity and the mask, so the object lies in the grid and its surroundings behind it (as PeRFception did)."""
    camera_clearance: float = 2.0
    """With an MSI: the cube is shrunk about its centre (never grown) until every training camera is at least
    this many cube half-sizes from it, so the grid cannot fill the space in front of the lenses."""
    downscale: float = 1.0
    """Images are resized by 1/downscale before fitting."""
    holdout_every: int = 8
    """Frame i is held out when i % holdout_every == 0 (0: keep the reader's split)."""
    min_train_frames: int = 3
    """Fewer training frames than this is a FitError."""
    eval_at_seconds: tuple[float, ...] = ()
    """Also evaluate held-out PSNR when the optimisation time passes these marks (for quality-vs-time curves)."""
    eval_max_views: int | None = None
    """Evaluate on at most this many held-out views (evenly spaced; None: all)."""
    seed: int = 0
    """Seed of ray batches and TV subsets."""
    device: str = "auto"
    """auto (cuda when available), cpu or cuda."""
    fused: bool = True
    """Render with the fused kernels (perfdata.models.fused) where they compile; False: the plain PyTorch path.
    Max-weight pruning (prune_weight > 0) always uses the plain path (it needs per-sample ids)."""
    init_from: str | None = None
    """A generalizable run folder: start from its prediction of the scene instead of a constant grid
    (`perfdata.pipelines.generalizable_export.initial_grid_from_model`)."""
    init_from_keep_alpha: float = 0.1
    """With init_from: only voxels whose predicted opacity over one voxel exceeds this (dilated by one voxel) are
    allocated; the free space the model is sure of starts empty, as depth empties it (0: every voxel). On held-out
    synthetic objects 0.1 kept 57 % of the 32^3 cube and 99.9 % of the voxels the true depth maps reach; 0.5
    kept 98.4 % of them, and that warm fit (constant density and colour in the kept voxels) ended 2.5 dB below
    a fit from scratch."""
    init_from_density_scale: float = 0.2
    """With init_from: the model's density is multiplied by this (its colour is kept as predicted). From three
    views the model's density is a blurred hull, far denser than the constant start where it is sure, and the
    fit has to thin it: on held-out object 5000 the warm fit ended at 28.22 dB with the density as predicted,
    28.89 at 0.2 and 29.04 at 0.05 (from scratch: 28.21) from the 1e-3 model; from the 2e-3 model, whose
    objects score 1.6 dB higher, the benchmark's warm_start_speedup is 1.94x at 0.2 and null at 0.05 (object
    5001 never reached the plain fit's PSNR; README "Generalizable fields")."""
    semantic: SemanticConfig = field(default_factory=SemanticConfig)
    """--method semantic: the label field, its loss and the label regimes (`pipelines.semantic_config`)."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if any(r < 2 for r in self.resolution):
            raise ConfigError(f"resolution must be sizes >= 2, got {self.resolution}")
        if len(self.upsample_at) < len(self.resolution) - 1:
            raise ConfigError(f"upsample_at needs {len(self.resolution) - 1} fractions for resolution {self.resolution}")
        if self.background not in BACKGROUNDS:
            raise ConfigError(f"background must be one of {', '.join(BACKGROUNDS)}, got {self.background!r}")
        if self.ndc_margin is not None and not 0 <= self.ndc_margin <= 4:
            raise ConfigError(f"ndc_margin must be in [0, 4], got {self.ndc_margin}")
        if not 0 < self.ndc_depth_ratio <= 1:
            raise ConfigError(f"ndc_depth_ratio must be in (0, 1], got {self.ndc_depth_ratio}")
        if self.msi_layers < 2 or (self.msi_height != 0 and self.msi_height < 2):
            raise ConfigError(f"msi_layers must be >= 2 and msi_height 0 (automatic) or >= 2, got {self.msi_layers}, "
                              f"{self.msi_height}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.downscale <= 0 or self.batch_rays <= 0 or self.steps <= 0 or self.step_size <= 0:
            raise ConfigError("downscale, batch_rays, steps and step_size must be positive")
        if not (0 <= self.init_from_keep_alpha < 1 and self.init_from_density_scale >= 0):
            raise ConfigError(f"init_from_keep_alpha must be in [0, 1) and init_from_density_scale >= 0, got "
                              f"{self.init_from_keep_alpha}, {self.init_from_density_scale}")
        if not self.distortion >= 0:
            raise ConfigError(f"distortion must be >= 0, got {self.distortion}")

    def resolved_resolution(self, image_size: int) -> tuple[int, ...]:
        """`resolution`, or the automatic choice for images whose larger side is `image_size`."""
        if self.resolution:
            return self.resolution
        final = min(max(1 << max(int(image_size) - 1, 1).bit_length(), 64), 256)
        return (final // 2, final)

    def resolved_msi_height(self, image_size: int) -> int:
        """`msi_height`, or the automatic choice for images whose larger side is `image_size`: that side / MSI_PIXELS
        in multiples of 8, between 16 and 512."""
        if self.msi_height:
            return self.msi_height
        return int(min(max(8 * round(image_size / MSI_PIXELS / 8), 16), 512))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> FitConfig:
        fixed: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        if isinstance(fixed.get("semantic"), dict):
            fixed["semantic"] = SemanticConfig.from_dict(fixed["semantic"], source)
        return from_fields(cls, fixed, source, "FitConfig")

    @classmethod
    def from_json(cls, path: str | Path) -> FitConfig:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: cannot read JSON config ({exc})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a config must be a JSON object of FitConfig fields")
        return cls.from_dict(data, str(path))


@dataclass(frozen=True)
class FitProgress:
    """What the progress callback receives every few steps."""

    step: int
    """Optimisation steps done."""
    seconds: float
    """Optimisation seconds so far (evaluation excluded)."""
    loss: float
    """Total loss of the last step."""
    psnr: float
    """PSNR of the last batch."""
    rays_per_second: float
    """Training rays per second since the start."""
    resolution: int
    """Current grid resolution."""
    n_voxels: int
    """Allocated voxels."""


@dataclass(frozen=True)
class FitResult:
    """A fitted scene."""

    grid: Any
    """The field as a `perfdata.grid.SparseGrid`."""
    metrics: dict[str, float]
    """Held-out psnr, ssim and (with depth truth) depth_abs_rel."""
    curve: tuple[tuple[float, float], ...] = ()
    """(optimisation seconds, held-out PSNR) at the `eval_at_seconds` marks."""
    steps: int = 0
    """Optimisation steps done."""
    train_seconds: float = 0.0
    """Optimisation seconds (evaluation excluded)."""
    device: str = "cpu"
    """Device the fit ran on."""
    stats: dict[str, float] = field(default_factory=dict)
    """Throughput: rays_per_second, samples_per_second, colour_samples_per_second."""
    config: FitConfig | None = None
    """The config as run (automatic choices such as the resolution filled in)."""
