import torch
import torch.nn.functional as F
from perfdata.models import sampling


def _volume_and_links(reso: tuple[int, int, int], channels: int, empty_frac: float, seed: int):
    g = torch.Generator().manual_seed(seed)
    vol = torch.randn(*reso, channels, generator=g, dtype=torch.float64)
    alloc = torch.rand(reso, generator=g) > empty_frac
    links = torch.full(reso, -1, dtype=torch.int32)
    links[alloc] = torch.arange(int(alloc.sum()), dtype=torch.int32)
    values = vol[alloc]
    vol = vol * alloc[..., None]
    return vol, links, values


def test_trilinear_matches_grid_sample() -> None:
    reso = (5, 6, 7)
    vol, links, values = _volume_and_links(reso, 4, 0.3, seed=0)
    g = torch.Generator().manual_seed(1)
    pts = torch.rand(500, 3, generator=g, dtype=torch.float64) * 2 - 1
    pts[:20] = pts[:20].sign() * 0.999  # near the faces
    u = sampling.cube_to_index(pts, torch.tensor(reso, dtype=torch.float64))
    flat, w = sampling.trilinear_corners(u, reso)
    ids = sampling.pad_links(links)[flat]
    w = w * (ids >= 0)
    ours = sampling.trilinear_gather(values, ids.clamp_min(0), w)
    # grid_sample: input (1, C, D=z, H=y, W=x), grid (..., (x, y, z)); align_corners=False = voxel centres (2i+1)/R-1
    inp = vol.permute(3, 2, 1, 0)[None]
    ref = F.grid_sample(inp, pts.view(1, 1, 1, -1, 3), mode="bilinear", padding_mode="zeros", align_corners=False)
    ref = ref.view(4, -1).T
    assert torch.allclose(ours, ref, atol=1e-10)
    assert torch.allclose(sampling.trilinear_gather_reference(values, ids.clamp_min(0), w), ref, atol=1e-10)


def test_voxel_centres_interpolate_exactly() -> None:
    reso = (4, 4, 4)
    vol, links, values = _volume_and_links(reso, 2, 0.0, seed=3)
    idx = torch.tensor([[0, 0, 0], [3, 1, 2], [2, 3, 3]])
    centres = (2.0 * idx.double() + 1.0) / 4 - 1.0
    flat, w = sampling.trilinear_corners(sampling.cube_to_index(centres, torch.full((3,), 4.0, dtype=torch.float64)), reso)
    out = sampling.trilinear_gather(values, sampling.pad_links(links)[flat].clamp_min(0), w)
    assert torch.allclose(out, vol[idx[:, 0], idx[:, 1], idx[:, 2]])


def test_trilinear_gather_gradcheck() -> None:
    g = torch.Generator().manual_seed(4)
    values = torch.randn(10, 3, generator=g, dtype=torch.float64, requires_grad=True)
    idx = torch.randint(0, 10, (7, 8), generator=g)
    w = torch.rand(7, 8, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda v: sampling.trilinear_gather(v, idx, w), (values,))
    a = sampling.trilinear_gather(values, idx, w).square().sum()
    (ga,) = torch.autograd.grad(a, values)
    b = sampling.trilinear_gather_reference(values, idx, w).square().sum()
    (gb,) = torch.autograd.grad(b, values)
    assert torch.allclose(ga, gb)


def test_ray_box_intersect() -> None:
    o = torch.tensor([[-3.0, 0.0, 0.0], [0.0, 0.0, 0.0], [-3.0, 5.0, 0.0]])
    d = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 2.0], [1.0, 0.0, 0.0]])
    near, far = sampling.ray_box_intersect(o, d)
    assert torch.allclose(near[:2], torch.tensor([2.0, 0.0])) and torch.allclose(far[:2], torch.tensor([4.0, 0.5]))
    assert far[2] <= near[2]


def test_compact_rows() -> None:
    ids = torch.tensor([[5, -1, 2], [2, 9, 5]])
    rows, local = sampling.compact_rows(ids, 10)
    assert rows.tolist() == [2, 5, 9]
    assert torch.equal(rows[local][ids >= 0], ids[ids >= 0])


def test_brick_links_hold_the_padded_table() -> None:
    g = torch.Generator().manual_seed(0)
    links = torch.randint(-1, 1000, (7, 5, 10), generator=g, dtype=torch.int32)
    bricked, dims = sampling.brick_links(links)
    assert dims == (3, 2, 3) and bricked.dtype == torch.int32 and bricked.numel() == 18 * 64
    padded = sampling.pad_links(links).reshape(9, 7, 12)
    x, y, z = torch.meshgrid(torch.arange(9), torch.arange(7), torch.arange(12), indexing="ij")
    at = (((x // 4) * dims[1] + y // 4) * dims[2] + z // 4) * 64 + (x % 4) * 16 + (y % 4) * 4 + z % 4
    assert torch.equal(bricked[at].long(), padded)
    outside = torch.ones(bricked.numel(), dtype=torch.bool)
    outside[at.reshape(-1)] = False
    assert bool((bricked[outside] == -1).all())  # the padding up to whole bricks is empty


def test_morton_order_interleaves_bits() -> None:
    coords = torch.stack(torch.meshgrid(*[torch.arange(4)] * 3, indexing="ij"), -1).reshape(-1, 3)
    ordered = coords[sampling.morton_order(coords)]
    assert ordered[:8].tolist() == [[0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, 1], [1, 0, 0], [1, 0, 1], [1, 1, 0], [1, 1, 1]]
    assert ordered[8].tolist() == [0, 0, 2] and ordered[63].tolist() == [3, 3, 3]
    # every aligned 2^k block is one run of rows
    block = (ordered // 2).tolist()
    assert all(block[i] == block[i - i % 8] for i in range(64))
