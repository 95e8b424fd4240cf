"""Quantisation of a field's values for the store: SH to uint8 per channel, density to float16 when safe.

Density error bound: float16 keeps 11 significant bits, so |d16 - d| <= 2^-11 |d| (normal range). In volume
rendering alpha = 1 - exp(-sigma * delta), |d alpha| <= (|d sigma| / sigma) * (sigma delta exp(-sigma delta))
<= 2^-11 / e ~ 1.8e-4 per sample: far below an 8-bit colour step. Densities beyond float16's range
(|sigma| > 65504) or non-finite ones make `choose_density_dtype` fall back to float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FLOAT16_MAX = 65504.0


@dataclass(frozen=True)
class QuantisedSH:
    """Attributes:
    q: (n, k) uint8 codes in [0, 2**bits - 1].
    sh_min: (k,) float32 per-channel offset.
    sh_scale: (k,) float32 per-channel step: value = q * sh_scale + sh_min.
    """

    q: np.ndarray
    sh_min: np.ndarray
    sh_scale: np.ndarray

    def decode(self) -> np.ndarray:
        """(n, k) float32 values."""
        return dequantise_sh(self.q, self.sh_min, self.sh_scale)


def quantise_sh(sh: np.ndarray, bits: int = 8) -> QuantisedSH:
    """Per-channel min/max quantisation of (n, k) SH coefficients to `bits` (1..8) bits, stored in uint8.

    A constant channel gets scale 1 and code 0 (its value is exactly sh_min).
    """
    assert sh.ndim == 2, f"sh must be (n, k), got {sh.shape}"
    if not 1 <= bits <= 8:
        raise ValueError(f"sh bits must be in 1..8, got {bits}")
    sh = np.asarray(sh, dtype=np.float32)
    levels = (1 << bits) - 1
    if len(sh) == 0:
        k = sh.shape[1]
        return QuantisedSH(np.zeros((0, k), np.uint8), np.zeros(k, np.float32), np.ones(k, np.float32))
    lo, hi = sh.min(axis=0), sh.max(axis=0)
    scale = np.where(hi > lo, (hi - lo) / levels, 1.0).astype(np.float32)
    q = np.rint((sh - lo) / scale)
    return QuantisedSH(np.clip(q, 0, levels).astype(np.uint8), lo.astype(np.float32), scale)


def dequantise_sh(q: np.ndarray, sh_min: np.ndarray, sh_scale: np.ndarray) -> np.ndarray:
    """(n, k) uint8 codes -> (n, k) float32 values q * scale + min."""
    out = q.astype(np.float32)
    out *= np.asarray(sh_scale, np.float32)  # in place: one float copy of the table instead of three
    out += np.asarray(sh_min, np.float32)
    return out


def choose_density_dtype(density: np.ndarray, requested: str = "auto") -> np.dtype:
    """float16 unless asked otherwise or the values do not fit it (overflow or non-finite)."""
    if requested in ("float16", "float32"):
        return np.dtype(requested)
    if requested != "auto":
        raise ValueError(f"density dtype must be auto, float16 or float32, got {requested!r}")
    finite = np.isfinite(density).all()
    fits = len(density) == 0 or float(np.abs(density).max()) < FLOAT16_MAX
    return np.dtype("float16") if finite and fits else np.dtype("float32")


def density_errors(density: np.ndarray, stored: np.ndarray) -> dict[str, float]:
    """Max absolute and relative (to |d| >= 1e-3) error of the stored densities, and the alpha-error bound."""
    d = np.asarray(density, np.float64)
    s = np.asarray(stored, np.float64)
    if len(d) == 0:
        return {"density_max_abs_err": 0.0, "density_max_rel_err": 0.0}
    err = np.abs(s - d)
    rel = err / np.maximum(np.abs(d), 1e-3)
    return {"density_max_abs_err": float(err.max()), "density_max_rel_err": float(rel.max())}
