"""Analytic primitives for the synthetic scenes: exact ray intersections, surface normals and world-space bounds.

Every primitive lives in its own local frame (a rigid pose: `rotation` maps local axes to world axes, then
`translation`), so a ray keeps its parameter t when it is carried into that frame. Rays come from
`perfdata.camera.pixel_rays`, whose directions have camera-frame z = 1, so the t of a hit is its z-depth.

Local shapes (all metres):
    sphere   (r,)        centred at the origin
    box      (hx, hy, hz) half-sizes, centred at the origin
    cylinder (r, hz)     axis z, z in [-hz, hz], capped
    cone     (r, h)      axis z, base disc of radius r at z = 0, apex at z = h, capped
    torus    (R, r)      axis z, ring radius R, tube radius r
    disc     (r,)        the plane z = 0 inside radius r (two-sided)
    rect     (hx, hy)    the plane z = 0 inside |x| <= hx, |y| <= hy (two-sided)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KINDS = ("sphere", "box", "cylinder", "cone", "torus", "disc", "rect")
_EPS = 1e-6  # smallest accepted ray parameter (metres of z-depth)
_N_PARAMS = {"sphere": 1, "box": 3, "cylinder": 2, "cone": 2, "torus": 2, "disc": 1, "rect": 2}


@dataclass(frozen=True)
class Material:
    """A procedural solid texture: colour = mix(color_a, color_b, m(p)) with p the local hit point.

    Attributes:
        color_a, color_b: RGB in [0, 1].
        texture: "solid" (color_a), "stripes" (along local z), "checker" (3-D soft checker) or "noise" (a sum of
            four random plane waves drawn from `noise_seed`).
        frequency: cycles per metre of the pattern.
        noise_seed: seed of the plane waves of "noise".
    """

    color_a: tuple[float, float, float]
    color_b: tuple[float, float, float] = (0.0, 0.0, 0.0)
    texture: str = "solid"
    frequency: float = 4.0
    noise_seed: int = 0


@dataclass(frozen=True, eq=False)
class Primitive:
    """One analytic surface with a rigid pose, a material and a label.

    Attributes:
        kind: one of `KINDS`.
        params: the shape parameters of `kind` (see the module docstring).
        rotation: (3, 3) local-to-world rotation (columns are the local axes in world coordinates).
        translation: (3,) world position of the local origin.
        material: its texture.
        label: class id written to label maps (-1 = ignore).
        foreground: True when its pixels belong to the mask.
    """

    kind: str
    params: tuple[float, ...]
    rotation: np.ndarray
    translation: np.ndarray
    material: Material
    label: int
    foreground: bool = True

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown primitive kind {self.kind!r}; known: {', '.join(KINDS)}")
        if len(self.params) != _N_PARAMS[self.kind]:
            raise ValueError(f"{self.kind} takes {_N_PARAMS[self.kind]} parameters, got {self.params}")

    def posed(self, rotation: np.ndarray, translation: np.ndarray) -> Primitive:
        """The primitive after a further rigid motion (rotation (3, 3), then translation (3,)) of its parent."""
        return Primitive(
            self.kind,
            self.params,
            rotation @ self.rotation,
            rotation @ self.translation + translation,
            self.material,
            self.label,
            self.foreground,
        )


def make_primitive(
    kind: str,
    params: tuple[float, ...],
    material: Material,
    label: int,
    translation: tuple[float, float, float] = (0.0, 0.0, 0.0),
    rotation: np.ndarray | None = None,
    foreground: bool = True,
) -> Primitive:
    """Convenience constructor with an identity rotation by default."""
    rot = np.eye(3) if rotation is None else np.asarray(rotation, dtype=np.float64)
    params = tuple(float(p) for p in params)
    return Primitive(kind, params, rot, np.asarray(translation, dtype=np.float64), material, label, foreground)


def rotation_z(angle: float) -> np.ndarray:
    """(3, 3) rotation by `angle` radians about the world z axis."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rotation_x(angle: float) -> np.ndarray:
    """(3, 3) rotation by `angle` radians about the world x axis."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def intersect(
    prim: Primitive, origins: np.ndarray, dirs: np.ndarray, t_max: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest hit of rays with a primitive.

    Args:
        prim: the primitive. origins: (n, 3) world ray origins. dirs: (n, 3) world ray directions (any length).
        t_max: optional (n,) ray parameters beyond which hits are not wanted (e.g. the nearest hit so far): rays
            whose bounding-sphere entry lies beyond it are skipped (reported as misses).
    Returns:
        t (n,) ray parameter of the nearest hit with t > 1e-6 (inf: miss), normals (n, 3) unit world normals
        (outward for solids; +z of the local frame for disc / rect), local (n, 3) hit points in the local frame.
    """
    n = len(origins)
    t, normals, local = np.full(n, np.inf), np.zeros((n, 3)), np.zeros((n, 3))
    idx, t_sub, n_sub, l_sub = intersect_candidates(prim, origins, dirs, ray_dots(origins, dirs), t_max)
    t[idx], normals[idx], local[idx] = t_sub, n_sub, l_sub
    return t, normals, local


def ray_dots(origins: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-ray dot products (d.d, o.d, o.o), each (n,), shared by the bounding-sphere tests of all primitives."""
    return np.einsum("ij,ij->i", dirs, dirs), np.einsum("ij,ij->i", origins, dirs), np.einsum("ij,ij->i", origins, origins)


def intersect_candidates(
    prim: Primitive,
    origins: np.ndarray,
    dirs: np.ndarray,
    dots: tuple[np.ndarray, np.ndarray, np.ndarray],
    t_max: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`intersect` on the rays that meet the primitive's bounding sphere before `t_max` only.

    Returns the indices (m,) of those rays and their t (m,) (inf: miss), world normals (m, 3), local points (m, 3).
    """
    idx = np.flatnonzero(_near_bounding_sphere(prim, origins, dirs, dots, t_max))
    o = (origins[idx] - prim.translation) @ prim.rotation
    d = dirs[idx] @ prim.rotation
    t, n_local = _INTERSECT[prim.kind](prim.params, o, d) if len(idx) else (np.zeros(0), np.zeros((0, 3)))
    return idx, t, n_local @ prim.rotation.T, _at(o, d, t)


def _near_bounding_sphere(
    prim: Primitive,
    origins: np.ndarray,
    dirs: np.ndarray,
    dots: tuple[np.ndarray, np.ndarray, np.ndarray],
    t_max: np.ndarray | None,
) -> np.ndarray:
    """(n,) bool: rays that meet the sphere around the primitive's world bounds before `t_max`."""
    lo, hi = world_bounds(prim)
    centre, radius = 0.5 * (lo + hi), 0.5 * float(np.linalg.norm(hi - lo)) * (1.0 + 1e-9) + 1e-9
    dd, od, oo = dots
    oc_d = dirs @ centre - od  # (c - o) . d
    oc2 = centre @ centre - 2.0 * (origins @ centre) + oo  # |c - o|^2
    tc = oc_d / dd
    dist2 = oc2 - tc * oc_d
    reach = np.sqrt(np.clip(radius * radius - dist2, 0.0, None) / dd)
    near = (dist2 <= radius * radius) & (tc + reach > _EPS)
    if t_max is not None:
        near &= tc - reach < t_max
    return near


def _smallest_positive(*ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Element-wise smallest candidate above _EPS (nan / inf = no candidate): (t (n,), index of the winner (n,))."""
    stack = np.stack([np.where(np.isfinite(t) & (t > _EPS), t, np.inf) for t in ts])
    idx = np.argmin(stack, axis=0)
    return np.take_along_axis(stack, idx[None], axis=0)[0], idx


def _quadratic(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Real roots (t0 <= t1) of a t^2 + b t + c = 0, nan where none (or a ~ 0); numerically stable form."""
    disc = b * b - 4.0 * a * c
    ok = (disc >= 0.0) & (np.abs(a) > 1e-12)
    sq = np.sqrt(np.where(ok, disc, 0.0))
    q = -0.5 * (b + np.where(b >= 0.0, sq, -sq))
    with np.errstate(divide="ignore", invalid="ignore"):
        r0, r1 = q / np.where(ok, a, 1.0), c / np.where(q != 0.0, q, np.nan)
    r1 = np.where(q == 0.0, r0, r1)  # b = c = 0: double root at 0
    lo, hi = np.minimum(r0, r1), np.maximum(r0, r1)
    return np.where(ok, lo, np.nan), np.where(ok, hi, np.nan)


def _plane_t(o: np.ndarray, d: np.ndarray, axis: int, level: float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return (level - o[:, axis]) / d[:, axis]


def _at(o: np.ndarray, d: np.ndarray, t: np.ndarray) -> np.ndarray:
    return o + np.where(np.isfinite(t), t, 0.0)[:, None] * d


def _sphere(params: tuple[float, ...], o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    (r,) = params
    t0, t1 = _quadratic(np.sum(d * d, 1), 2.0 * np.sum(o * d, 1), np.sum(o * o, 1) - r * r)
    t, _ = _smallest_positive(t0, t1)
    return t, _at(o, d, t) / r


def _box(params: tuple[float, ...], o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h = np.asarray(params)
    safe = np.where(d == 0.0, 1e-300, d)
    with np.errstate(over="ignore"):
        t1, t2 = (-h - o) / safe, (h - o) / safe
    near, far = np.minimum(t1, t2), np.maximum(t1, t2)
    t_in, axis = near.max(1), near.argmax(1)
    t_out = far.min(1)
    hit = (t_out >= t_in) & (t_in > _EPS)  # rays starting inside a box see nothing of it (cameras never are)
    normals = np.zeros_like(o)
    rows = np.arange(len(o))
    normals[rows, axis] = -np.sign(d[rows, axis])
    return np.where(hit, t_in, np.inf), normals


def _disc_cap(o: np.ndarray, d: np.ndarray, level: float, radius: float) -> np.ndarray:
    t = _plane_t(o, d, 2, level)
    p = _at(o, d, t)
    return np.where(p[:, 0] ** 2 + p[:, 1] ** 2 <= radius * radius, t, np.nan)


def _cylinder(params: tuple[float, ...], o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r, hz = params
    a = d[:, 0] ** 2 + d[:, 1] ** 2
    b = 2.0 * (o[:, 0] * d[:, 0] + o[:, 1] * d[:, 1])
    s0, s1 = _quadratic(a, b, o[:, 0] ** 2 + o[:, 1] ** 2 - r * r)
    side = [np.where(np.abs(_at(o, d, s)[:, 2]) <= hz, s, np.nan) for s in (s0, s1)]
    t, idx = _smallest_positive(side[0], side[1], _disc_cap(o, d, hz, r), _disc_cap(o, d, -hz, r))
    p = _at(o, d, t)
    radial = np.stack([p[:, 0], p[:, 1], np.zeros_like(t)], 1) / r
    cap = np.stack([np.zeros_like(t), np.zeros_like(t), np.where(idx == 2, 1.0, -1.0)], 1)
    return t, np.where((idx < 2)[:, None], radial, cap)


def _cone(params: tuple[float, ...], o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r, h = params
    k2 = (r / h) ** 2
    w = h - o[:, 2]
    a = d[:, 0] ** 2 + d[:, 1] ** 2 - k2 * d[:, 2] ** 2
    b = 2.0 * (o[:, 0] * d[:, 0] + o[:, 1] * d[:, 1] + k2 * w * d[:, 2])
    s0, s1 = _quadratic(a, b, o[:, 0] ** 2 + o[:, 1] ** 2 - k2 * w * w)
    side = []
    for s in (s0, s1):
        z = _at(o, d, s)[:, 2]
        side.append(np.where((z >= 0.0) & (z <= h), s, np.nan))
    t, idx = _smallest_positive(side[0], side[1], _disc_cap(o, d, 0.0, r))
    p = _at(o, d, t)
    grad = np.stack([p[:, 0], p[:, 1], k2 * (h - p[:, 2])], 1)
    grad /= np.maximum(np.linalg.norm(grad, axis=1, keepdims=True), 1e-12)
    base = np.tile([0.0, 0.0, -1.0], (len(t), 1))
    return t, np.where((idx < 2)[:, None], grad, base)


def _torus(params: tuple[float, ...], o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quartic (|p|^2 + R^2 - r^2)^2 = 4 R^2 (px^2 + py^2), solved for the rays that meet the bounding sphere
    by companion-matrix eigenvalues, then polished by Newton steps on the quartic."""
    R, r = params
    t = np.full(len(o), np.inf)
    normals = np.zeros_like(o)
    scale = np.linalg.norm(d, axis=1)
    dn = d / scale[:, None]
    b = np.sum(o * dn, 1)
    near = b * b - (np.sum(o * o, 1) - (R + r) ** 2) >= 0.0  # meets the bounding sphere
    if not near.any():
        return t, normals
    on, dd, bb = o[near], dn[near], b[near]
    k = np.sum(on * on, 1) + R * R - r * r
    coeffs = np.stack(
        [
            np.ones_like(k),
            4.0 * bb,
            4.0 * bb * bb + 2.0 * k - 4.0 * R * R * (dd[:, 0] ** 2 + dd[:, 1] ** 2),
            4.0 * bb * k - 8.0 * R * R * (on[:, 0] * dd[:, 0] + on[:, 1] * dd[:, 1]),
            k * k - 4.0 * R * R * (on[:, 0] ** 2 + on[:, 1] ** 2),
        ],
        1,
    )
    s = _smallest_real_root(coeffs, tol=1e-6 * (R + r))
    p = on + np.where(np.isfinite(s), s, 0.0)[:, None] * dd
    ring = np.sqrt(p[:, 0] ** 2 + p[:, 1] ** 2)
    centre = np.stack([p[:, 0], p[:, 1], np.zeros_like(ring)], 1) * (R / np.maximum(ring, 1e-12))[:, None]
    n = p - centre
    t[near] = s / scale[near]
    normals[near] = n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    return t, normals


def _smallest_real_root(coeffs: np.ndarray, tol: float) -> np.ndarray:
    """Smallest real root above _EPS of monic quartics (m, 5) (highest power first), inf where none."""
    m = len(coeffs)
    comp = np.zeros((m, 4, 4))
    comp[:, 0, :] = -coeffs[:, 1:]
    comp[:, 1, 0] = comp[:, 2, 1] = comp[:, 3, 2] = 1.0
    roots = np.linalg.eigvals(comp)
    near_real = np.abs(roots.imag) < 1e-3
    x = roots.real.copy()
    for _ in range(3):  # Newton polish on the polynomial itself
        f, df = _horner(coeffs, x)
        step = np.where(np.abs(df) > 1e-12, f / np.where(np.abs(df) > 1e-12, df, 1.0), 0.0)
        x = x - np.where(near_real, step, 0.0)
    f, _ = _horner(coeffs, x)
    ok = near_real & (np.abs(f) < tol) & (x > _EPS)
    return np.where(ok, x, np.inf).min(1)


def _horner(coeffs: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Value and derivative of polynomials coeffs (m, k) (highest power first) at x (m, j)."""
    f = np.zeros_like(x)
    df = np.zeros_like(x)
    for i in range(coeffs.shape[1]):
        df = df * x + f
        f = f * x + coeffs[:, i, None]
    return f, df


def _disc(params: tuple[float, ...], o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = _disc_cap(o, d, 0.0, params[0])
    t, _ = _smallest_positive(t)
    return t, np.tile([0.0, 0.0, 1.0], (len(t), 1))


def _rect(params: tuple[float, ...], o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    hx, hy = params
    t = _plane_t(o, d, 2, 0.0)
    p = _at(o, d, t)
    t, _ = _smallest_positive(np.where((np.abs(p[:, 0]) <= hx) & (np.abs(p[:, 1]) <= hy), t, np.nan))
    return t, np.tile([0.0, 0.0, 1.0], (len(t), 1))


_INTERSECT = {
    "sphere": _sphere,
    "box": _box,
    "cylinder": _cylinder,
    "cone": _cone,
    "torus": _torus,
    "disc": _disc,
    "rect": _rect,
}


def world_bounds(prim: Primitive) -> tuple[np.ndarray, np.ndarray]:
    """Exact axis-aligned world bounds (lo (3,), hi (3,)) of a posed primitive."""
    rot, c = prim.rotation, prim.translation
    axis = rot[:, 2]  # local z in world coordinates
    across = np.sqrt(np.clip(1.0 - axis**2, 0.0, None))  # extent factor of a unit circle about `axis`
    kind, p = prim.kind, prim.params
    if kind == "sphere":
        half = np.full(3, p[0])
    elif kind in ("box", "rect"):
        half = np.abs(rot[:, : len(p)]) @ np.asarray(p)
    elif kind == "cylinder":
        half = p[1] * np.abs(axis) + p[0] * across
    elif kind == "torus":
        half = p[0] * across + p[1]
    elif kind == "disc":
        half = p[0] * across
    else:  # cone: the base circle and the apex
        apex = c + p[1] * axis
        return np.minimum(c - p[0] * across, apex), np.maximum(c + p[0] * across, apex)
    return c - half, c + half
