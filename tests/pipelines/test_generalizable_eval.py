import numpy as np
import pytest
import torch
from perfdata.pipelines.generalizable_data import eval_targets, label_map, load_scene_tensors, spread_views
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


def test_label_map_by_name() -> None:
    model = ("background", "sphere", "wall", "floor")
    assert label_map(("wall", "floor", "ceiling"), model).tolist() == [2, 3, -1]
    assert label_map(None, model) is None
    assert ROOM_LABEL_NAMES[0] == "wall"
