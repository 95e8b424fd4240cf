"""NVIDIA Warp kernels of the fused Plenoxel render: one source compiled for the CPU (LLVM) and for CUDA.

Each thread owns one ray and does everything the plain path (`plenoxel.march` -> `lookup` ->
`sampling.trilinear_gather` -> `volrend` -> `sh`) does with tensors, without writing a single per-sample
tensor:
- march: samples at t_cube + (k + offset) * step inside the occupied box [t_near, t_far); a sample whose block of
  the dilated coarse occupancy is empty skips the next `jump - 1` samples (they lie within `coarse_factor`
  voxels of it, so in empty cells); a sample in an unoccupied cell is dropped -- the same samples as `march`.
- trilinear density (ReLU), tau = sigma * step, w = T * (1 - exp(-tau)), T = exp(-sum of earlier tau);
- SH colour (degree 2, clamp(sum c_k Y_k + 0.5, 0, 1)) only where w > weight_thresh;
- composite rgb, depth (sum w t, before z_scale), opacity and the distortion loss
  sum_ij w_i w_j |t_i - t_j| + step / 3 sum_i w_i^2 (the pair sum as 2 sum_i w_i (t_i W_<i - (w t)_<i)); stop
  once T < stop_thresh.
The backward kernel marches each ray again and scatters, for the loss gradients g (rgb, depth, opacity,
distortion),
    dL/dtau_k = T_{k+1} f_k - sum_{i>k} w_i f_i,
    f_i = g_rgb . c_i + g_depth t_i + g_opacity + g_dist (2 sum_j w_j |t_i - t_j| + 2/3 w_i step),
(the suffix sum is S - prefix with S = sum_i w_i f_i = g_rgb . rgb + g_depth depth + g_opacity opacity
+ 2 g_dist distortion, known from the forward outputs; sum_j w_j |t_i - t_j| splits at i into the running
prefix sums of w and w t and the ray's totals, opacity and depth) into the 8 corner densities, and g_rgb w_k
(through the clamp) into the 8 x 27 SH coefficients; both into compact rows (the rows the forward flagged,
numbered by `map_d` / `map_s`).

Arrays (a launch handles the rays ray_start + tid < ray_end: a CPU worker thread takes one contiguous block):
    origins, dirs (n_rays, 3) float32 cube rays (unit dirs); offsets (n_rays,) float32 in [0, 1);
    box (2, 3) float32 occupied box; occupied ((X+1)(Y+1)(Z+1),) uint8; coarse (coarse cells,) uint8;
    links: the padded link table in bricks of 4^3 (`sampling.brick_links`) int32, brick_dims its bricks per
    axis; density (n_voxels,) float32; sh (n_voxels, 27) float32.
"""

# ruff: noqa: UP018 -- in a Warp kernel `x = float(0.0)` declares a variable that loops may reassign;
# a bare literal would be a constant

from __future__ import annotations

import warp as wp

C0 = wp.constant(0.28209479177387814)
C1 = wp.constant(0.4886025119029199)
C20 = wp.constant(1.0925484305920792)
C22 = wp.constant(0.31539156525252005)
C24 = wp.constant(0.5462742152960396)

vec9 = wp.types.vector(length=9, dtype=wp.float32)
vec8i = wp.types.vector(length=8, dtype=wp.int32)


@wp.struct
class Grid:
    """The grid and its occupancy as the kernels see them (see the module docstring for the arrays)."""

    box: wp.array2d(dtype=wp.float32)
    occupied: wp.array(dtype=wp.uint8)
    coarse: wp.array(dtype=wp.uint8)
    links: wp.array(dtype=wp.int32)
    brick_dims: wp.vec3i
    density: wp.array(dtype=wp.float32)
    sh: wp.array2d(dtype=wp.float32)
    reso: wp.vec3i
    coarse_dims: wp.vec3i
    coarse_factor: int
    jump: int
    step: float
    weight_thresh: float
    stop_thresh: float


@wp.func
def sh_basis(d: wp.vec3) -> vec9:
    x, y, z = d[0], d[1], d[2]
    return vec9(C0, -C1 * y, C1 * z, -C1 * x, C20 * x * y, -C20 * y * z,
                C22 * (2.0 * z * z - x * x - y * y), -C20 * x * z, C24 * (x * x - y * y))


@wp.func
def slab(o: float, d: float, lo: float, hi: float) -> wp.vec2:
    """(t entering, t leaving) of the slab [lo, hi] along one axis (as `sampling.ray_box_intersect`)."""
    dd = d
    if wp.abs(dd) < 1e-12:
        dd = 1e-12
    inv = 1.0 / dd
    t0 = (lo - o) * inv
    t1 = (hi - o) * inv
    return wp.vec2(wp.min(t0, t1), wp.max(t0, t1))


@wp.func
def ray_span(g: Grid, o: wp.vec3, d: wp.vec3) -> wp.vec3:
    """(t_cube, t_near, t_far): entry of the cube [-1, 1]^3 and the span inside the occupied box."""
    t_cube = float(0.0)
    t_near = float(0.0)
    t_far = float(1e30)
    for a in range(3):
        c = slab(o[a], d[a], -1.0, 1.0)
        t_cube = wp.max(t_cube, c[0])
        b = slab(o[a], d[a], g.box[0, a], g.box[1, a])
        t_near = wp.max(t_near, b[0])
        t_far = wp.min(t_far, b[1])
    return wp.vec3(t_cube, t_near, t_far)


@wp.func
def index_coord(p: float, r: int) -> float:
    """Index coordinate u = (x + 1) R / 2 - 1/2 (`sampling.cube_to_index`)."""
    return (p + 1.0) * (0.5 * float(r)) - 0.5


@wp.func
def corner_floor(u: float, r: int) -> float:
    """The lower corner of u clamped to [-1, R - 1] (as `sampling.trilinear_corners`)."""
    return wp.min(wp.max(wp.floor(u), -1.0), float(r) - 1.0)


@wp.func
def corner_weight(c: int, f: wp.vec3) -> float:
    wx = wp.where(c // 4 == 1, f[0], 1.0 - f[0])
    wy = wp.where((c // 2) % 2 == 1, f[1], 1.0 - f[1])
    wz = wp.where(c % 2 == 1, f[2], 1.0 - f[2])
    return wx * wy * wz


@wp.func
def cell_rows(g: Grid, cell: wp.vec4i) -> vec8i:
    """Grid rows of the 8 corners (x slowest) of the cell (lower corner + 1 per axis, from `cell_state`, = its
    lower corner in the padded table); -1 = not allocated. A 4^3 brick is 64 rows of 4 x 4 z-y lines, so the
    corners lie in one or two cache lines of a brick most of the time."""
    rows = vec8i()
    for c in range(8):
        x = cell[0] + c // 4
        y = cell[1] + (c // 2) % 2
        z = cell[2] + c % 2
        brick = ((x >> 2) * g.brick_dims[1] + (y >> 2)) * g.brick_dims[2] + (z >> 2)
        rows[c] = g.links[brick * 64 + (x & 3) * 16 + (y & 3) * 4 + (z & 3)]
    return rows


@wp.func
def cell_state(g: Grid, p: wp.vec3) -> wp.vec4i:
    """(cell x, y, z in the occupancy (0..R), state): state 2 = occupied cell, 1 = empty cell in a non-empty
    coarse block, 0 = empty coarse block (the next jump - 1 samples are empty too)."""
    cx = int(corner_floor(index_coord(p[0], g.reso[0]), g.reso[0])) + 1
    cy = int(corner_floor(index_coord(p[1], g.reso[1]), g.reso[1])) + 1
    cz = int(corner_floor(index_coord(p[2], g.reso[2]), g.reso[2])) + 1
    cf = g.coarse_factor
    blk = ((cx // cf) * g.coarse_dims[1] + cy // cf) * g.coarse_dims[2] + cz // cf
    state = int(0)
    if g.coarse[blk] != wp.uint8(0):
        state = 1
        if g.occupied[(cx * (g.reso[1] + 1) + cy) * (g.reso[2] + 1) + cz] != wp.uint8(0):
            state = 2
    return wp.vec4i(cx, cy, cz, state)


@wp.func
def cell_frac(g: Grid, p: wp.vec3, cell: wp.vec4i) -> wp.vec3:
    """Trilinear fractions of point p in its cell (cell = lower corner + 1 per axis, from `cell_state`)."""
    fx = wp.clamp(index_coord(p[0], g.reso[0]) - float(cell[0] - 1), 0.0, 1.0)
    fy = wp.clamp(index_coord(p[1], g.reso[1]) - float(cell[1] - 1), 0.0, 1.0)
    fz = wp.clamp(index_coord(p[2], g.reso[2]) - float(cell[2] - 1), 0.0, 1.0)
    return wp.vec3(fx, fy, fz)


@wp.func
def sample_sigma(g: Grid, rows: vec8i, f: wp.vec3) -> float:
    """Trilinear raw density (before ReLU) of the corners `rows`."""
    s = float(0.0)
    for c in range(8):
        row = rows[c]
        if row >= 0:
            s += corner_weight(c, f) * g.density[row]
    return s


@wp.func
def sample_colour_raw(g: Grid, rows: vec8i, f: wp.vec3, b: vec9) -> wp.vec3:
    """sum_k c_k Y_k of the trilinear SH coefficients of the corners `rows` (before + 0.5 and the clamp)."""
    r = float(0.0)
    gr = float(0.0)
    bl = float(0.0)
    for c in range(8):
        row = rows[c]
        if row >= 0:
            w = corner_weight(c, f)
            sr = float(0.0)
            sg = float(0.0)
            sb = float(0.0)
            for k in range(9):
                sr += g.sh[row, k] * b[k]
                sg += g.sh[row, 9 + k] * b[k]
                sb += g.sh[row, 18 + k] * b[k]
            r += w * sr
            gr += w * sg
            bl += w * sb
    return wp.vec3(r, gr, bl)


@wp.func
def clamp01(v: wp.vec3) -> wp.vec3:
    return wp.vec3(wp.clamp(v[0] + 0.5, 0.0, 1.0), wp.clamp(v[1] + 0.5, 0.0, 1.0), wp.clamp(v[2] + 0.5, 0.0, 1.0))


@wp.func
def load3(a: wp.array2d(dtype=wp.float32), i: int) -> wp.vec3:
    return wp.vec3(a[i, 0], a[i, 1], a[i, 2])


@wp.func
def first_index(g: Grid, span: wp.vec3) -> float:
    """Sample index to start from: one step before the occupied box (as `plenoxel.march`)."""
    return wp.max(wp.floor((span[1] - span[0]) / g.step - 1.0), 0.0)


@wp.func
def next_occupied(g: Grid, o: wp.vec3, d: wp.vec3, span: wp.vec3, off: float, k: float) -> float:
    """Index of the first sample from index k on inside [t_near, t_far) and in an occupied cell; -1 if none.
    A sample in an empty coarse block skips the next jump - 1 samples too."""
    kk = k
    while True:
        t = span[0] + (kk + off) * g.step
        if t >= span[2]:
            return -1.0
        if t >= span[1]:
            state = cell_state(g, o + t * d)[3]
            if state == 2:
                return kk
            if state == 0:
                kk += float(g.jump - 1)
        kk += 1.0
    return -1.0


@wp.func
def mark_rows(rows: vec8i, flags: wp.array(dtype=wp.uint8)):
    for c in range(8):
        row = rows[c]
        if row >= 0:
            flags[row] = wp.uint8(1)


@wp.kernel
def render_forward(
    g: Grid, origins: wp.array2d(dtype=wp.float32), dirs: wp.array2d(dtype=wp.float32),
    offsets: wp.array(dtype=wp.float32), ray_start: int, ray_end: int, mark: int,
    out: wp.array2d(dtype=wp.float32), counts: wp.array2d(dtype=wp.int32), flags_d: wp.array(dtype=wp.uint8),
    flags_s: wp.array(dtype=wp.uint8), cache: wp.array2d(dtype=wp.vec4),
):
    """out (n_rays, 6): rgb (foreground), depth (sum w t), opacity, distortion; counts (n_rays, 2): samples in
    occupied cells, colour samples; with mark != 0, flags_d[row] = 1 for the corner rows of every sample with
    density > 0 and flags_s[row] = 1 for those of every colour sample (n_voxels,) each, and the first
    cache.shape[1] samples in occupied cells of each ray leave (raw density, raw colour (colour samples only))
    in cache (n_rays, cap) for the backward, which then reads them instead of the grid."""
    ray = wp.tid() + ray_start
    if ray >= ray_end:
        return
    o = load3(origins, ray)
    d = load3(dirs, ray)
    span = ray_span(g, o, d)
    rgb = wp.vec3(0.0)
    depth = float(0.0)
    opacity = float(0.0)
    n_samples = int(0)
    n_colour = int(0)
    pairs = float(0.0)  # sum_ij w_i w_j |t_i - t_j| = 2 sum_i w_i (t_i W_<i - (wt)_<i)
    squares = float(0.0)
    if span[2] > span[1]:
        b = sh_basis(d)
        k = first_index(g, span)
        excl = float(0.0)
        while True:
            k = next_occupied(g, o, d, span, offsets[ray], k)
            if k < 0.0:
                break
            t = span[0] + (k + offsets[ray]) * g.step
            k += 1.0
            p = o + t * d
            cs = cell_state(g, p)
            slot = n_samples
            n_samples += 1
            f = cell_frac(g, p, cs)
            rows = cell_rows(g, cs)
            sigma = sample_sigma(g, rows, f)
            cached = mark != 0 and slot < cache.shape[1]
            if cached:
                cache[ray, slot] = wp.vec4(sigma, 0.0, 0.0, 0.0)
            if sigma <= 0.0:
                continue
            if mark != 0:
                mark_rows(rows, flags_d)
            w = (1.0 - wp.exp(-sigma * g.step)) * wp.exp(-excl)
            excl += sigma * g.step
            pairs += 2.0 * w * (t * opacity - depth)
            squares += w * w
            opacity += w
            depth += w * t
            if w > g.weight_thresh:
                n_colour += 1
                raw = sample_colour_raw(g, rows, f, b)
                rgb += w * clamp01(raw)
                if cached:
                    cache[ray, slot] = wp.vec4(sigma, raw[0], raw[1], raw[2])
                if mark != 0:
                    mark_rows(rows, flags_s)
            if wp.exp(-excl) < g.stop_thresh:
                break
    out[ray, 0] = rgb[0]
    out[ray, 1] = rgb[1]
    out[ray, 2] = rgb[2]
    out[ray, 3] = depth
    out[ray, 4] = opacity
    out[ray, 5] = pairs + squares * g.step / 3.0
    counts[ray, 0] = n_samples
    counts[ray, 1] = n_colour


@wp.func
def pass_clamp(raw: float, grad: float) -> float:
    """The gradient through clamp(raw + 0.5, 0, 1): torch passes it on the closed interval."""
    v = raw + 0.5
    return wp.where(v >= 0.0 and v <= 1.0, grad, 0.0)


@wp.func
def scatter_colour(
    rows: vec8i, f: wp.vec3, b: vec9, raw: wp.vec3, g_col: wp.vec3,
    row_map: wp.array(dtype=wp.int32), grad_sh: wp.array2d(dtype=wp.float32),
):
    """Gradient g_col of the clamped colour -> the 27 SH coefficients of the 8 corners (compact rows)."""
    gr = wp.vec3(pass_clamp(raw[0], g_col[0]), pass_clamp(raw[1], g_col[1]), pass_clamp(raw[2], g_col[2]))
    for c in range(8):
        row = rows[c]
        if row >= 0:
            local = row_map[row]
            w = corner_weight(c, f)
            for k in range(9):
                wb = w * b[k]
                wp.atomic_add(grad_sh, local, k, wb * gr[0])
                wp.atomic_add(grad_sh, local, 9 + k, wb * gr[1])
                wp.atomic_add(grad_sh, local, 18 + k, wb * gr[2])


@wp.func
def scatter_density(
    rows: vec8i, f: wp.vec3, g_sigma: float, map_d: wp.array(dtype=wp.int32),
    grad_density: wp.array(dtype=wp.float32),
):
    """Gradient g_sigma of the trilinear density -> its 8 corners (compact rows)."""
    for c in range(8):
        row = rows[c]
        if row >= 0:
            wp.atomic_add(grad_density, map_d[row], corner_weight(c, f) * g_sigma)


@wp.kernel
def render_backward(
    g: Grid, origins: wp.array2d(dtype=wp.float32), dirs: wp.array2d(dtype=wp.float32),
    offsets: wp.array(dtype=wp.float32), ray_start: int, ray_end: int,
    out: wp.array2d(dtype=wp.float32), grad_out: wp.array2d(dtype=wp.float32),
    map_d: wp.array(dtype=wp.int32), map_s: wp.array(dtype=wp.int32), cache: wp.array2d(dtype=wp.vec4),
    grad_density: wp.array(dtype=wp.float32), grad_sh: wp.array2d(dtype=wp.float32),
):
    """Gradients of the loss whose gradients wrt `out` (n_rays, 6) are `grad_out` (n_rays, 6): into
    grad_density (m_d,) and grad_sh (m_s, 27), compact rows (grid row r -> map_d[r], map_s[r]); the samples the
    forward cached are read from `cache`, later ones from the grid."""
    ray = wp.tid() + ray_start
    if ray >= ray_end:
        return
    o = load3(origins, ray)
    d = load3(dirs, ray)
    span = ray_span(g, o, d)
    if span[2] <= span[1]:
        return
    g_rgb = load3(grad_out, ray)
    g_depth = grad_out[ray, 3]
    g_opac = grad_out[ray, 4]
    g_dist = grad_out[ray, 5]
    depth_all = out[ray, 3]
    opac_all = out[ray, 4]
    total = wp.dot(g_rgb, load3(out, ray)) + g_depth * depth_all + g_opac * opac_all + 2.0 * g_dist * out[ray, 5]
    w_before = float(0.0)
    wt_before = float(0.0)
    b = sh_basis(d)
    k = first_index(g, span)
    excl = float(0.0)
    prefix = float(0.0)
    slot = int(0)
    while True:
        k = next_occupied(g, o, d, span, offsets[ray], k)
        if k < 0.0:
            break
        t = span[0] + (k + offsets[ray]) * g.step
        k += 1.0
        p = o + t * d
        cs = cell_state(g, p)
        f = cell_frac(g, p, cs)
        rows = cell_rows(g, cs)
        cached = slot < cache.shape[1]
        kept = wp.vec4(0.0)
        if cached:
            kept = cache[ray, slot]
        else:
            kept = wp.vec4(sample_sigma(g, rows, f), 0.0, 0.0, 0.0)
        slot += 1
        sigma = kept[0]
        if sigma <= 0.0:
            continue
        w = (1.0 - wp.exp(-sigma * g.step)) * wp.exp(-excl)
        excl += sigma * g.step
        value = g_depth * t + g_opac
        if g_dist != 0.0:  # d distortion / d w_i = 2 sum_j w_j |t_i - t_j| + 2/3 w_i step
            spread = t * w_before - wt_before + (depth_all - wt_before - w * t) - t * (opac_all - w_before - w)
            value += g_dist * (2.0 * spread + 2.0 * w * g.step / 3.0)
        w_before += w
        wt_before += w * t
        if w > g.weight_thresh:
            raw = wp.vec3(kept[1], kept[2], kept[3])
            if not cached:
                raw = sample_colour_raw(g, rows, f, b)
            value += wp.dot(g_rgb, clamp01(raw))
            scatter_colour(rows, f, b, raw, w * g_rgb, map_s, grad_sh)
        prefix += w * value
        scatter_density(rows, f, (wp.exp(-excl) * value - (total - prefix)) * g.step, map_d, grad_density)
        if wp.exp(-excl) < g.stop_thresh:
            break


@wp.kernel
def rmsprop_rows(
    param: wp.array2d(dtype=wp.float32), sq: wp.array2d(dtype=wp.float32), rows: wp.array(dtype=wp.int64),
    grad: wp.array2d(dtype=wp.float32), beta: float, eps: float, lr: float,
):
    """Sparse RMSProp over distinct rows (m,): sq <- beta sq + (1 - beta) g^2, param <- param - lr g / (sqrt(sq) + eps)
    (as `optim.SparseRMSProp.step_`), one thread per row of grad (m, C) (a thread per element costs more
    in thread overhead on the CPU than the row's arithmetic)."""
    i = wp.tid()
    r = int(rows[i])
    for j in range(grad.shape[1]):
        g = grad[i, j]
        v = beta * sq[r, j] + (1.0 - beta) * g * g
        sq[r, j] = v
        param[r, j] = param[r, j] + (-lr) * (g / (wp.sqrt(v) + eps))


@wp.func
def tv_neighbour(links: wp.array3d(dtype=wp.int32), coords: wp.array2d(dtype=wp.int64), r: int, axis: int) -> int:
    """Row of the +axis neighbour of row r, -1 when outside the grid or not allocated."""
    x = int(coords[r, 0])
    y = int(coords[r, 1])
    z = int(coords[r, 2])
    nb = int(-1)
    if axis == 0 and x + 1 < links.shape[0]:
        nb = int(links[x + 1, y, z])
    if axis == 1 and y + 1 < links.shape[1]:
        nb = int(links[x, y + 1, z])
    if axis == 2 and z + 1 < links.shape[2]:
        nb = int(links[x, y, z + 1])
    return nb


@wp.kernel
def tv_into(
    values: wp.array2d(dtype=wp.float32), links: wp.array3d(dtype=wp.int32), coords: wp.array2d(dtype=wp.int64),
    rows: wp.array(dtype=wp.int64), coef: float, row_map: wp.array(dtype=wp.int32), grad: wp.array2d(dtype=wp.float32),
    atomic: int,
):
    """The same TV gradient as `tv_pairs`, added straight into a compact gradient (m, C) at the positions
    row_map gives both rows of every pair: with `atomic` atomically (CUDA), else by plain adds (a CPU launch
    runs on one thread)."""
    j, axis = wp.tid()
    r = int(rows[j])
    nb = tv_neighbour(links, coords, r, axis)
    if nb < 0:
        return
    a = int(row_map[r])
    b = int(row_map[nb])
    for ch in range(values.shape[1]):
        g = coef * (values[nb, ch] - values[r, ch])
        if atomic != 0:
            wp.atomic_add(grad, a, ch, -g)
            wp.atomic_add(grad, b, ch, g)
        else:
            grad[a, ch] = grad[a, ch] - g
            grad[b, ch] = grad[b, ch] + g


@wp.kernel
def tv_pairs(
    values: wp.array2d(dtype=wp.float32), links: wp.array3d(dtype=wp.int32), coords: wp.array2d(dtype=wp.int64),
    rows: wp.array(dtype=wp.int64), order: wp.array(dtype=wp.int64), coef: float, out_rows: wp.array(dtype=wp.int64),
    out_grad: wp.array2d(dtype=wp.float32),
):
    """Squared-difference TV of sampled rows (k,) against their +x, +y, +z neighbours (as
    `plenoxel_train.tv_grads`): slot (2 axis) k + i gets row r_i and -g, slot (2 axis + 1) k + i the neighbour and
    +g, g = coef (v[neighbour] - v[r_i]); out_rows = -1 where the neighbour is outside or not allocated.
    Threads take the rows in `order` (sorted by row: the grid is then read in memory order)."""
    j, axis = wp.tid()
    i = int(order[j])
    k = rows.shape[0]
    r = int(rows[i])
    nb = tv_neighbour(links, coords, r, axis)
    slot_a = 2 * axis * k + i
    slot_b = slot_a + k
    if nb < 0:
        out_rows[slot_a] = wp.int64(-1)
        out_rows[slot_b] = wp.int64(-1)
        return
    out_rows[slot_a] = wp.int64(r)
    out_rows[slot_b] = wp.int64(nb)
    for ch in range(values.shape[1]):
        g = coef * (values[nb, ch] - values[r, ch])
        out_grad[slot_a, ch] = -g
        out_grad[slot_b, ch] = g
