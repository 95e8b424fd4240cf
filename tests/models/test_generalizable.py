import numpy as np
import pytest
import torch
from perfdata.models import generalizable as gen
from perfdata.models import metrics, sh
from perfdata.models.generalizable import FieldConfig, GeneralizableField
from perfdata.pipelines.generalizable_data import frame_rays, load_scene_tensors, spread_views
from perfdata.pipelines.generalizable_eval import encode_sources, render_frame

from perfdata.synthetic import OBJECT_LABEL_NAMES, make_object_scene

SIZE = 16


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: small ops on a loaded 2-core machine run far faster without thread barriers."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def scene_tensors():
    scene = make_object_scene(seed=3, n_views=8, size=SIZE, shape="box", scene_id="box")
    return load_scene_tensors(scene, OBJECT_LABEL_NAMES)


def small_model(n_classes: int = len(OBJECT_LABEL_NAMES), seed: int = 0) -> GeneralizableField:
    torch.manual_seed(seed)
    return GeneralizableField(FieldConfig(image_size=(SIZE, SIZE), n_classes=n_classes, feat_channels=8,
                                          view_hidden=16, hidden=32)).eval()


def test_output_does_not_depend_on_source_order(scene_tensors) -> None:
    st, model = scene_tensors, small_model()
    views = [0, 3, 5]
    pts = torch.rand(500, 3) * 1.6 - 0.8
    dirs = torch.nn.functional.normalize(torch.randn(500, 3), dim=-1)
    with torch.no_grad():
        a = model(encode_sources(model, st, views), pts, dirs)
        b = model(encode_sources(model, st, views[::-1]), pts, dirs)
        c = model(encode_sources(model, st, [5, 0, 3]), pts, dirs)
    for key in ("sigma", "rgb", "logits"):
        assert torch.allclose(a[key], b[key], atol=1e-5), key
        assert torch.allclose(a[key], c[key], atol=1e-5), key
    # and the order changes nothing in a composited view either
    o, d, zs = frame_rays(st, 1)
    with torch.no_grad():
        ra = gen.render_rays(model, encode_sources(model, st, views), o.float(), d.float(), zs.float(), st.background, 16)
        rb = gen.render_rays(model, encode_sources(model, st, [3, 5, 0]), o.float(), d.float(), zs.float(), st.background, 16)
    assert torch.allclose(ra["rgb"], rb["rgb"], atol=1e-5)


def test_point_outside_every_view_gets_zero_mask_and_renders_from_the_prior(scene_tensors) -> None:
    st, model = scene_tensors, small_model()
    sources = encode_sources(model, st, [0, 3, 5])
    # a point behind all cameras: far outside the cube on the far side of every camera centre
    centre = st.centres.mean(0)
    far = (st.centres[0] - centre) * 50.0
    pts = torch.stack([far, -far * 0 + st.centres[0] * 3.0])
    uv, mask = gen.project(pts, sources.proj, (SIZE, SIZE))
    assert mask.shape == (3, 2)
    assert float(mask[:, 0].sum()) == 0.0
    with torch.no_grad():
        pf = model.point_features(sources, pts[:1])
        out = model(sources, pts[:1], torch.tensor([[0.0, 0.0, 1.0]]))
    assert torch.isfinite(out["sigma"]).all() and torch.isfinite(out["rgb"]).all()
    assert torch.allclose(out["rgb"], pf["prior"], atol=1e-6)  # no view: the prior colour alone
    # a ray that misses the cube still renders: background colour, zero opacity
    with torch.no_grad():
        r = gen.render_rays(model, sources, torch.tensor([[5.0, 5.0, 5.0]]), torch.tensor([[1.0, 0.0, 0.0]]),
                            torch.ones(1), st.background, 8)
    assert float(r["opacity"][0]) == 0.0 and torch.allclose(r["rgb"][0], st.background)


def test_aggregate_is_masked_mean_and_variance() -> None:
    values = torch.tensor([[[1.0], [5.0]], [[3.0], [7.0]], [[100.0], [9.0]]])  # (V=3, n=2, D=1)
    mask = torch.tensor([[1.0, 1.0], [1.0, 1.0], [0.0, 1.0]])
    out = gen.aggregate(values, mask)
    assert torch.allclose(out[0], torch.tensor([2.0, 1.0, 2 / 3]))
    assert torch.allclose(out[1], torch.tensor([7.0, 8 / 3, 1.0]))
    assert torch.allclose(gen.aggregate(values, torch.zeros(3, 2)), torch.zeros(2, 3))


def test_fit_sh_recovers_coefficients() -> None:
    torch.manual_seed(0)
    coeffs = torch.randn(5, 27) * 0.1
    dirs = gen.fibonacci_directions(16)
    basis = sh.eval_sh_basis(dirs)
    raw = torch.einsum("nck,mk->nmc", coeffs.view(5, 3, 9), basis) + 0.5  # unclamped colours
    assert torch.allclose(gen.fit_sh(basis, raw), coeffs, atol=1e-4)


def test_one_scene_overfit_reproduces_its_target_view(scene_tensors) -> None:
    st = scene_tensors
    model = small_model(seed=1).train()
    views, target = spread_views(st.centres, st.axes, 3, start=0), 2
    o, d, zs = (t.float() for t in frame_rays(st, target))
    truth = st.images[target].permute(1, 2, 0).reshape(-1, 3)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        out = gen.render_rays(model, encode_sources(model, st, views), o, d, zs, st.background, 16, g)
        loss = torch.mean((out["rgb"] - truth) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        img = render_frame(model, encode_sources(model, st, views), st, target, 16)["rgb"].clamp(0, 1)
    truth_img = truth.reshape(SIZE, SIZE, 3)
    mean_psnr = metrics.psnr(st.images[views].mean(dim=(0, 2, 3)).expand_as(truth_img), truth_img)
    got = metrics.psnr(img, truth_img)
    assert got > 22.0 and got > mean_psnr + 8.0, (got, mean_psnr)


def test_2d_head_learns_the_source_views_labels(scene_tensors) -> None:
    st = scene_tensors
    model = small_model(seed=2).train()
    views = [0, 3, 5]
    labels = st.labels[views]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(80):
        logits = model.source_logits(encode_sources(model, st, views))
        loss = torch.nn.functional.cross_entropy(logits, labels, ignore_index=-1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        logits = model.source_logits(encode_sources(model, st, views))
    assert logits.shape == (3, len(OBJECT_LABEL_NAMES), SIZE, SIZE)
    known = labels >= 0
    accuracy = float((logits.argmax(1) == labels)[known].float().mean())
    majority = float(torch.bincount(labels[known]).max()) / int(known.sum())
    assert accuracy > 0.95 and accuracy > majority + 0.05, (accuracy, majority)


def test_stratified_samples_stay_in_their_bins() -> None:
    t, delta = gen.stratified_t(torch.tensor([1.0, 0.0]), torch.tensor([3.0, -1.0]), 4, torch.Generator().manual_seed(0))
    assert torch.allclose(delta[:, 0], torch.tensor([0.5, 0.0]))
    bins = ((t[0] - 1.0) / 0.5).floor()
    assert np.array_equal(bins.numpy(), [0, 1, 2, 3])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_renders_and_trains_on_cuda(scene_tensors) -> None:
    st = scene_tensors.to(torch.device("cuda"))
    model = small_model().cuda().train()
    o, d, zs = (t.float().cuda() for t in frame_rays(st, 1))
    g = torch.Generator(device="cuda").manual_seed(0)
    sources = encode_sources(model, st, [0, 3, 5])
    out = gen.render_rays(model, sources, o, d, zs, st.background, 16, g)
    (out["rgb"].sum() + model.source_logits(sources).sum()).backward()
    assert out["rgb"].is_cuda and all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_detached_label_weights_keep_the_label_loss_off_density(scene_tensors) -> None:
    st, model = scene_tensors, small_model().train()
    o, d, zs = (t.float()[:64] for t in frame_rays(st, 1))
    sources = encode_sources(model, st, [0, 3, 5])
    grads = []
    for detach in (False, True):
        model.zero_grad()
        out = gen.render_rays(model, sources, o, d, zs, st.background, 12, detach_label_weights=detach)
        torch.nn.functional.cross_entropy(out["logits"], torch.ones(64, dtype=torch.long)).backward(retain_graph=True)
        sigma_grad = model.heads.weight.grad  # None: no path from the loss to the density head at all
        grads.append((0.0 if sigma_grad is None else sigma_grad[0].abs().sum().item(),
                      model.semantic[-1].weight.grad.abs().sum().item()))
    (sig_free, log_free), (sig_det, log_det) = grads
    assert sig_free > 0 and log_free > 0  # composited through the weights, the label loss moves density
    assert sig_det == 0.0 and log_det > 0  # detached: only the logit branch learns from it


def test_encoder_context_reaches_every_pixel() -> None:
    """The global average of the coarsest scale: a change in one corner changes the features everywhere."""
    torch.manual_seed(0)
    enc = gen.ImageEncoder(8).eval()
    a = torch.rand(1, 3, 32, 32)
    b = a.clone()
    b[:, :, :4, :4] = 1.0 - b[:, :, :4, :4]
    with torch.no_grad():
        fa, fb = enc(a), enc(b)
    assert fa.shape == (1, 8, 16, 16)
    assert float((fa[..., -1, -1] - fb[..., -1, -1]).abs().max()) > 0.0  # the far corner too


def test_first_view_layer_on_the_feature_map_equals_it_per_sample(scene_tensors) -> None:
    """Sources hold the encoder features through the per-view MLP's first layer: sampling them equals running
    the whole per-view MLP on [sampled encoder features, colour, distance] (the plain route)."""
    st, model = scene_tensors, small_model()
    views = [0, 3, 5]
    pts = torch.rand(300, 3) * 1.6 - 0.8
    with torch.no_grad():
        pf = model.point_features(encode_sources(model, st, views), pts)
        images, proj, centres = st.images[views], st.proj[views], st.centres[views]
        uv, _ = gen.project(pts, proj, (SIZE, SIZE))
        feats = gen.bilinear(model.encoder(images), uv, (SIZE, SIZE))
        rgb = gen.bilinear(images, uv, (SIZE, SIZE))
        dist = (pts[None] - centres[:, None]).norm(dim=-1, keepdim=True)
        plain = model.view_mlp(torch.cat([feats, rgb, dist], dim=-1))
    assert torch.allclose(pf["h_view"], plain, atol=1e-5)
    assert torch.allclose(pf["rgb_view"], rgb)
