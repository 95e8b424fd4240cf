"""Configuration of `perfdata fit --method semantic` (a frozen dataclass nested in `FitConfig.semantic`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from perfdata.configs import from_fields
from perfdata.errors import ConfigError

UPSAMPLE = ("nearest", "centres", "interior")
"""How `--label-downscale` labels are brought back to the training resolution (`semantic_labels.downscale_labels`)."""


@dataclass(frozen=True)
class SemanticConfig:
    """The label field, its loss, and the label regimes of the training frames (for experiments)."""

    weight: float = 0.04
    """Weight of the cross-entropy against the photometric MSE (Semantic-NeRF's 0.04). The compositing weights
    carry no grad from it, and Adam normalises the logits' step, so it only matters against `tv`."""
    lr: float = 0.1
    """Adam learning rate of the logits at the start (decays exponentially to lr_final; `models.optim.SparseAdam`,
    whose momentum averages noisy label gradients; alone it was no better than RMSProp: TV is what denoises)."""
    lr_final: float = 0.01
    """Adam learning rate of the logits at the end."""
    factor: int | None = None
    """Density voxels per logit voxel along each axis (1: logits on the grid's own voxels; 2: 1/8 as many, each
    labelled ray reaching twice as far). None: 1 for labels on every pixel of every frame, 2 for sparse ones
    (`sparse`): on a 64 px room 1/8-resolution labels 0.77 -> 0.82 miou, 10 % of frames 0.56 -> 0.58, while
    dense labels drop 0.92 -> 0.90 at 2."""
    rays: int = 512
    """Labelled rays per step for the label loss, averaged over the whole fit (drawn from the labelled pixels
    only; a loss starting at fraction s of the fit takes rays / (1 - s) per step). 512 beside 2048 colour rays
    kept a room fit within 1.3x of a plain one; 1024 cost 1.5x for +0.01 miou."""
    step_size: float = 1.0
    """Sample spacing of the label rays in voxels (the colour's default is 0.5): logits are smooth across a
    surface, so half the samples composite them as well (64 px room, dense labels: 0.924 -> 0.925 miou)."""
    weight_thresh: float = 0.03
    """Training composites logits only over samples whose compositing weight exceeds this (rendering keeps the
    colour's 1e-4): a room ray's weight sits on a few samples at its surface; dropping the faint ones around it
    (14.7 -> 8.3 composited samples per ray) cut the label step by ~1.7 s in 300 steps at no miou cost
    (0.921 -> 0.924)."""
    tv: float = 1e-3
    """Weight of squared-difference TV on the logits: the grid's only smoothness prior (an MLP has its own);
    on a 64 px room it took 50 % noise from 0.85 to 0.89 miou and dense labels from 0.92 to 0.90."""
    tv_fraction: float = 0.05
    """Fraction of logit rows that TV visits per step (a fresh random subset each step)."""
    start_at: float | None = None
    """Progress fraction at which the label loss starts in a joint fit (None: at the last upsample, so logits
    learn on the final grid: on a 64 px room 0.93 miou against 0.90 from the start, and cheaper)."""
    threshold: float = 0.5
    """Exported `labels`: argmax of the logits where its softmax probability reaches this, else -1."""
    from_fit: str | None = None
    """A fits folder (or one scene's fit folder) of a plenoxel fit: keep its grid, learn only the logits."""
    label_frames: float = 1.0
    """Fraction of training frames whose labels are used (spread evenly over the frames)."""
    label_noise: float = 0.0
    """Fraction of the labelled pixels of each frame set to a random other class."""
    label_downscale: int = 1
    """Labels given at 1/K resolution (nearest: each coarse pixel samples the label at its centre)."""
    label_upsample: str = "centres"
    """How 1/K labels supervise the training resolution: "centres" (only the rays through the centres of the
    coarse pixels, where their labels are exact), "interior" (also the pixels of coarse cells whose 3x3 coarse
    neighbourhood agrees) or "nearest" (every pixel its cell's label: wrong along every boundary)."""
    label_clicks: int = 0
    """If > 0: only this many random pixels per class per frame are labelled (label propagation)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.label_frames <= 1.0:
            raise ConfigError(f"--label-frames must be in (0, 1], got {self.label_frames}")
        if not 0.0 <= self.label_noise <= 1.0:
            raise ConfigError(f"--label-noise must be in [0, 1], got {self.label_noise}")
        if self.label_downscale < 1 or self.label_clicks < 0 or (self.factor is not None and self.factor < 1) or self.rays < 1:
            raise ConfigError("--label-downscale, factor and rays must be >= 1 and --label-clicks >= 0")
        if self.start_at is not None and not 0.0 <= self.start_at < 1.0:
            raise ConfigError(f"semantic start_at must be in [0, 1), got {self.start_at}")
        if self.label_upsample not in UPSAMPLE:
            raise ConfigError(f"semantic label_upsample must be one of {', '.join(UPSAMPLE)}, got {self.label_upsample!r}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"semantic threshold must be in [0, 1], got {self.threshold}")
        if self.step_size <= 0 or self.weight_thresh < 0:
            raise ConfigError("semantic step_size must be > 0 and weight_thresh >= 0")
        if self.weight < 0 or self.tv < 0 or self.lr <= 0 or self.lr_final <= 0:
            raise ConfigError("semantic weight and tv must be >= 0, lr and lr_final > 0")

    @property
    def degraded(self) -> bool:
        """Whether the training labels are degraded (then fit.json reports input_miou)."""
        return self.label_frames < 1.0 or self.label_noise > 0 or self.label_downscale > 1 or self.label_clicks > 0

    @property
    def sparse(self) -> bool:
        """Whether the training labels leave pixels or frames unlabelled (fewer frames, coarse, clicks)."""
        return self.label_frames < 1.0 or self.label_downscale > 1 or self.label_clicks > 0

    @property
    def resolved_factor(self) -> int:
        """`factor`, or its automatic choice: 2 for sparse labels, else 1."""
        return self.factor if self.factor is not None else (2 if self.sparse else 1)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> SemanticConfig:
        return from_fields(cls, data, source, "semantic")
