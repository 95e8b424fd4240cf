"""Colour augmentation shared by the 2D and 3D trainers: a random affine re-colouring about grey,

    colour' = 0.5 + M (colour - 0.5) + shift,

with M a permutation of the RGB channels times per-channel gains drawn from COLOUR_GAIN and shift uniform within
+-COLOUR_SHIFT. Images are re-coloured directly (`recolour_image`, clamped to [0, 1]); a radiance field's SH
coefficients exactly (augment3d.recolour_sh), since its colour is 0.5 + sum_k c_k Y_k(d). Meant for classes whose
colour is arbitrary (a synthetic object's random material, a ground tint that only the training scenes share):
the permutation makes any colour a class might be recognised by as likely in every class.
"""

from __future__ import annotations

import numpy as np
import torch

COLOUR_GAIN = (0.6, 1.4)
COLOUR_SHIFT = 0.2
N_COLOURS = 3


def colour_transform(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(M (3, 3), shift (3,)) of a random re-colouring (module doc): new channel i = gain_i * old channel perm_i."""
    perm, gains = rng.permutation(N_COLOURS), rng.uniform(*COLOUR_GAIN, N_COLOURS)
    m = np.zeros((N_COLOURS, N_COLOURS))
    m[np.arange(N_COLOURS), perm] = gains
    return m, rng.uniform(-COLOUR_SHIFT, COLOUR_SHIFT, N_COLOURS)


def recolour_image(x: torch.Tensor, m: np.ndarray, shift: np.ndarray) -> torch.Tensor:
    """(3, H, W) image in [0, 1] -> 0.5 + m (x - 0.5) + shift, clamped to [0, 1]."""
    mt = torch.from_numpy(m).to(x.dtype)
    out = torch.einsum("ij,jhw->ihw", mt, x - 0.5) + 0.5 + torch.from_numpy(shift).to(x.dtype)[:, None, None]
    return out.clamp(0.0, 1.0)
