import numpy as np
import pytest
import torch
from perfdata.pipelines.generalizable_data import (
    eval_targets,
    label_map,
    load_scene_tensors,
    nearest_views,
    sources_for,
    spread_views,
)
from perfdata.pipelines.generalizable_eval import warp_baseline

from perfdata.synthetic import OBJECT_LABEL_NAMES, ROOM_LABEL_NAMES, make_object_scene


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_warp_baseline_of_a_view_onto_itself_is_the_view() -> None:
    st = load_scene_tensors(make_object_scene(seed=4, n_views=6, size=20, shape="sphere"), OBJECT_LABEL_NAMES)
    fill = torch.tensor([0.25, 0.5, 0.75])
    out = warp_baseline(st, 2, 2, fill)
    known = st.depth[2] > 0
    truth = st.images[2].permute(1, 2, 0)
    assert torch.allclose(out[known], truth[known], atol=1e-4)
    assert torch.allclose(out[~known], fill.expand(int((~known).sum()), 3))
    # another view: pixels it cannot see (or sees occluded) take the fill colour, the rest its colours
    other = warp_baseline(st, 2, 3, fill)
    assert float((other - truth).abs()[known].mean()) < 0.15


def test_spread_views_on_a_ring_are_evenly_spaced() -> None:
    st = load_scene_tensors(make_object_scene(seed=5, n_views=12, size=8), ())
    views = spread_views(st.centres, st.axes, 3, start=0)
    assert views[0] == 0 and sorted(views) == sorted(set(views))
    gaps = np.diff(sorted(views + [12]))
    assert set(gaps.tolist()) <= {3, 4, 5}
    targets = eval_targets(12, views, 4)
    assert len(targets) == 4 and not set(targets) & set(views)


def test_nearest_views_on_a_ring_are_the_neighbours() -> None:
    st = load_scene_tensors(make_object_scene(seed=5, n_views=12, size=8), ())
    # the synthetic ring: even azimuths in frame order (random elevations)
    for target in (0, 5, 11):
        near = nearest_views(st.centres, st.axes, target, 2)
        assert sorted(near) == sorted([(target - 1) % 12, (target + 1) % 12])
    assert target not in sources_for(st, "nearest", 4, target)
    assert sources_for(st, "spread", 3, 7) == spread_views(st.centres, st.axes, 3, start=0)


def test_label_map_by_name() -> None:
    model = ("background", "sphere", "wall", "floor")
    assert label_map(("wall", "floor", "ceiling"), model).tolist() == [2, 3, -1]
    assert label_map(None, model) is None
    assert ROOM_LABEL_NAMES[0] == "wall"


def test_rendered_rays_do_not_depend_on_the_chunk() -> None:
    from perfdata.models.generalizable import FieldConfig, GeneralizableField
    from perfdata.pipelines.generalizable_data import frame_rays
    from perfdata.pipelines.generalizable_eval import encode_sources, render_rays_chunked

    st = load_scene_tensors(make_object_scene(seed=4, n_views=6, size=16, shape="box"), OBJECT_LABEL_NAMES)
    torch.manual_seed(0)
    model = GeneralizableField(FieldConfig(image_size=(16, 16), n_classes=len(OBJECT_LABEL_NAMES), feat_channels=8,
                                           view_hidden=16, hidden=32)).eval()
    sources = encode_sources(model, st, [0, 2, 4])
    o, d, zs = frame_rays(st, 1)
    bg = torch.tensor([0])
    whole = render_rays_chunked(model, sources, o, d, zs, st.background, 16, chunk=len(o), background_classes=bg)
    parts = render_rays_chunked(model, sources, o, d, zs, st.background, 16, chunk=37, background_classes=bg)
    assert set(whole) == set(parts) == {"rgb", "depth", "opacity", "logits", "foreground", "rgb_bg"}
    for key in whole:
        assert torch.allclose(whole[key], parts[key], atol=1e-5), key


def test_miou_counts_the_classes_present_in_the_truth() -> None:
    from perfdata.pipelines.generalizable_eval import EvalTotals

    totals = EvalTotals.empty(4)
    totals.psnr, totals.ssim, totals.mean = [20.0], [0.5], [10.0]
    # truth has classes 0 and 1 only; half of class 1 is predicted as class 3 (absent from the truth)
    totals.confusion[0, 0] = 10
    totals.confusion[1, 1] = 5
    totals.confusion[1, 3] = 5
    s = totals.summary()
    assert s["miou"] == pytest.approx((1.0 + 0.5) / 2)  # class 3 adds no IoU of 0 of its own
    assert s["accuracy"] == pytest.approx(15 / 20)
    assert s["class_accuracy"] == pytest.approx((1.0 + 0.5) / 2)


def test_class_weights_lift_rare_classes() -> None:
    from types import SimpleNamespace

    from perfdata.pipelines.generalizable_fit import class_weights

    labels = torch.tensor([[0] * 80 + [1] * 16 + [2] * 4 + [-1] * 8])  # class 3 never appears
    scenes = [SimpleNamespace(labels=labels), SimpleNamespace(labels=None)]
    w = class_weights(scenes, 4, 0.5)
    freq = torch.tensor([0.8, 0.16, 0.04])
    assert torch.allclose(w[:3], (0.16 / freq) ** 0.5)  # median frequency / frequency, to the power
    assert float(w[3]) == 1.0 and float(w[2]) > float(w[1]) > float(w[0])
    assert class_weights(scenes, 4, 0.0) is None and class_weights(scenes[1:], 4, 0.5) is None
