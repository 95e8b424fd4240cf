"""The generalizable field through the CLI: fit (resumable), render --model, export --from-model, the warm start,
and the bad-input cases (one line naming the file, exit 2, nothing written)."""

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from perfdata.pipelines.generalizable_ckpt import read_checkpoint

from perfdata.cli import main
from perfdata.synthetic import SynthConfig, synthesize

TINY = {"batch_rays": 128, "n_samples": 12, "eval_samples": 12, "eval_views": 2, "checkpoint_seconds": 2.0,
        "heldout_fraction": 0.34, "field": {"feat_channels": 8, "view_hidden": 16, "hidden": 32}}


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@dataclass
class Result:
    exit_code: int
    output: str


def invoke(*args: object) -> Result:
    """Run the console entry point; stdout and stderr together as `output`."""
    buf = io.StringIO()
    code = 0
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = int(exc.code or 0)
    return Result(code, buf.getvalue())


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("gen") / "objects"
    synthesize(SynthConfig(kind="objects", out=root, n_scenes=3, n_views=6, size=16, seed=1))
    return root


@pytest.fixture(scope="module")
def run(data: Path, tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("gen") / "run"
    config = out.parent / "tiny.json"
    config.write_text(json.dumps(TINY))
    res = invoke("fit", "--method", "generalizable", "--reader", "synthetic", "--data", data, "--out", out,
                 "--source-views", "2", "--max-seconds", "3", "--config", config, "--device", "cpu")
    assert res.exit_code == 0, res.output
    return out


def test_fit_writes_checkpoint_metrics_and_curves(run: Path) -> None:
    record = json.loads((run / "fit.json").read_text())
    assert record["method"] == "generalizable" and record["source_views"] == 2
    assert set(record["scenes"]["heldout"]).isdisjoint(record["scenes"]["train"])
    for key in ("psnr", "ssim", "miou", "baseline_warp_psnr", "baseline_mean_psnr"):
        assert np.isfinite(record["metrics"][key]), key
    assert record["steps"] > 5 and (run / "curves.png").stat().st_size > 1000
    ckpt = read_checkpoint(run / "model.safetensors")
    assert ckpt.step == record["steps"] and any(k.endswith("exp_avg") for k in ckpt.optim_state)


def test_fit_with_nearest_sources_records_the_choice(data: Path, tmp_path: Path) -> None:
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({**TINY, "checkpoint_seconds": 10.0}))
    out = tmp_path / "run"
    res = invoke("fit", "--method", "generalizable", "--reader", "synthetic", "--data", data, "--out", out,
                 "--source-views", "2", "--source-choice", "nearest", "--steps", "4", "--config", config,
                 "--device", "cpu")
    assert res.exit_code == 0, res.output
    record = json.loads((out / "fit.json").read_text())
    assert record["source_choice"] == "nearest" and record["config"]["source_choice"] == "nearest"
    assert record["steps"] == 4 and np.isfinite(record["metrics"]["psnr"])
    # a per-scene fit does not take it
    res = invoke("fit", "--method", "plenoxel", "--reader", "synthetic", "--data", data, "--out", tmp_path / "p",
                 "--source-choice", "nearest")
    assert res.exit_code == 2 and "--source-choice" in res.output and not (tmp_path / "p").exists()


def test_resume_continues_from_the_checkpoint(run: Path, data: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    copy.mkdir()
    (copy / "model.safetensors").write_bytes((run / "model.safetensors").read_bytes())
    before = read_checkpoint(copy / "model.safetensors")
    config = tmp_path / "c.json"
    config.write_text(json.dumps(TINY))
    args = ["fit", "--method", "generalizable", "--reader", "synthetic", "--data", data, "--out", copy,
            "--source-views", "2", "--config", config, "--device", "cpu"]
    refused = invoke(*args, "--max-seconds", "6")
    assert refused.exit_code == 2 and "--resume" in refused.output
    res = invoke(*args, "--max-seconds", f"{before.seconds + 2.0}", "--resume")
    assert res.exit_code == 0, res.output
    after = read_checkpoint(copy / "model.safetensors")
    assert after.step > before.step and after.seconds >= before.seconds + 1.9


def test_render_model_then_pack(run: Path, data: Path, tmp_path: Path) -> None:
    renders = tmp_path / "renders"
    res = invoke("render", "--model", run, "--reader", "synthetic", "--data", data, "--out", renders,
                 "--source-views", "2", "--views", "3", "--device", "cpu")
    assert res.exit_code == 0, res.output
    scene = sorted(p for p in renders.iterdir() if p.is_dir() and not p.name.startswith("."))[0]
    meta = json.loads((scene / "cameras.json").read_text())
    assert len(meta["views"]) == 3 and len(meta["source_views"]) == 2 and "label.png" in meta["members"]
    assert (scene / "00000.rgb.png").is_file() and (scene / "00002.label.png").is_file() and (scene / "DONE").is_file()
    shards = tmp_path / "shards"
    res = invoke("pack", "--renders", renders, "--out", shards, "--val-fraction", "0")
    assert res.exit_code == 0, res.output
    index = json.loads((shards / "index.json").read_text())
    assert sum(s["samples"] for s in index["shards"]) == 9


def test_render_model_with_each_views_nearest_sources(run: Path, data: Path, tmp_path: Path) -> None:
    renders = tmp_path / "renders"
    res = invoke("render", "--model", run, "--reader", "synthetic", "--data", data, "--out", renders,
                 "--source-views", "2", "--source-choice", "nearest", "--views", "3", "--poses", "train",
                 "--what", "rgb", "--device", "cpu")
    assert res.exit_code == 0, res.output
    scene = sorted(p for p in renders.iterdir() if p.is_dir() and not p.name.startswith("."))[0]
    meta = json.loads((scene / "cameras.json").read_text())
    assert meta["source_choice"] == "nearest" and meta["source_views"] is None
    from perfdata.readers import load_scenes

    frames = {f.name: f for f in next(iter(load_scenes("synthetic", str(data), [scene.name]))).frames}
    for view in meta["views"]:
        assert len(view["source_views"]) == 2 and set(view["source_views"]) <= set(frames)
        # never the view's own frame as its source
        assert not any(np.allclose(frames[n].c2w, view["c2w"]) for n in view["source_views"])
    # each view has its own neighbours
    assert len({tuple(v["source_views"]) for v in meta["views"]}) > 1


def test_export_from_model_validates_and_renders(run: Path, data: Path, tmp_path: Path) -> None:
    store = tmp_path / "pred.zarr"
    res = invoke("export", "--from-model", run, "--reader", "synthetic", "--data", data, "--out", store,
                 "--source-views", "2", "--resolution", "16")
    assert res.exit_code == 0, res.output
    assert invoke("validate", store).exit_code == 0
    from perfdata.store import open_store

    st = open_store(str(store))
    sid = sorted(st.scene_ids)[0]
    attrs = st.scene_attrs(sid)
    grid = st.read_scene(sid)
    assert grid.logits is not None and grid.logits.shape[1] == 8 and grid.n_voxels > 0
    m = attrs.metrics
    assert np.isfinite(m["psnr_grid_vs_model"]) and m["psnr_grid_vs_model"] > 10.0
    out = tmp_path / "r"
    res = invoke("render", "--store", store, "--out", out, "--views", "2", "--size", "16", "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert (out / sid / "DONE").is_file() and (out / sid / "00001.label.png").is_file()


def test_warm_start_begins_at_the_model_prediction(run: Path, data: Path, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    from perfdata.models import metrics, plenoxel
    from perfdata.pipelines.fit import fit_scene
    from perfdata.pipelines.fitconfig import FitConfig
    from perfdata.pipelines.generalizable_ckpt import load_model
    from perfdata.pipelines.generalizable_data import load_scene_tensors, spread_views
    from perfdata.pipelines.generalizable_eval import encode_sources, render_frame
    from perfdata.pipelines.generalizable_export import dilate, initial_grid_from_model

    from perfdata.readers import load_scenes

    scene = next(load_scenes("synthetic", data)).with_holdout(3)
    full = initial_grid_from_model(run, scene, 32, torch.ones(3), keep_alpha=0.0, density_scale=1.0)
    # the whole prediction renders what the model renders from the same (training) source views
    train = scene.select([i for i, f in enumerate(scene.frames) if f.split == "train"])
    model = load_model(run).model
    st = load_scene_tensors(train, ())
    sources = encode_sources(model, st, spread_views(st.centres, st.axes, 2, start=0))
    mine = render_frame(model, sources, st, 1, 64)["rgb"].clamp(0, 1)
    theirs = plenoxel.render_camera(full, st.K[1], st.c2w[1], 16, 16)["rgb"].clamp(0, 1)
    assert full.n_voxels == 32**3 and metrics.psnr(theirs, mine) > 20.0
    # the warm start keeps the voxels the model does not see through, with its colour and a fraction of its density
    sigma = full.density[full.links.reshape(-1).long(), 0].reshape(32, 32, 32)
    alpha = 1.0 - torch.exp(-sigma * 2.0 / 32)
    keep = min(float(alpha.quantile(0.9)), 0.99)  # the tiny model's own scale (trained for 3 s), so the carve is not empty
    warm = initial_grid_from_model(run, scene, 32, torch.ones(3), keep_alpha=keep, density_scale=0.05)
    kept = dilate(alpha > keep)
    assert int(kept.sum()) > 0 and torch.equal(warm.links >= 0, kept)
    rows_w, rows_f = warm.links[kept].long(), full.links[kept].long()
    torch.testing.assert_close(warm.density[rows_w], 0.05 * full.density[rows_f])
    torch.testing.assert_close(warm.sh[rows_w], full.sh[rows_f], atol=1e-4, rtol=1e-4)
    from perfdata.pipelines import generalizable_export

    def see_through(model, sources, points, chunk):  # type: ignore[no-untyped-def]
        sigma, logits = real_density(model, sources, points, chunk)
        return torch.zeros_like(sigma), logits

    real_density = generalizable_export.point_density
    with pytest.MonkeyPatch.context() as mp, caplog.at_level("WARNING"):
        mp.setattr(generalizable_export, "point_density", see_through)
        empty = initial_grid_from_model(run, scene, 8, torch.ones(3), keep_alpha=0.1, density_scale=0.05)
    assert empty.n_voxels == 8**3 and "keeps every voxel" in caplog.text  # nothing carved: all kept, logged
    fit = fit_scene(scene, FitConfig(resolution=(32,), steps=1, batch_rays=64, device="cpu", holdout_every=3,
                                     init_from=str(run), init_from_keep_alpha=keep))
    assert fit.grid.n_voxels == warm.n_voxels  # the hook: the carved prediction at the first resolution
    res = invoke("fit", "--reader", "synthetic", "--data", data, "--out", tmp_path / "f", "--init-from",
                 tmp_path / "nowhere", "--steps", "1")
    assert res.exit_code == 2 and not (tmp_path / "f").exists()


def test_bad_input(run: Path, data: Path, tmp_path: Path) -> None:
    # too few views for the source views (+ a target)
    out = tmp_path / "few"
    res = invoke("fit", "--method", "generalizable", "--reader", "synthetic", "--data", data, "--out", out,
                 "--source-views", "6", "--max-seconds", "1")
    assert res.exit_code == 2 and "needs at least 7" in res.output and not out.exists()
    # a checkpoint of another architecture
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(run / "model.safetensors"), "pt") as fh:
        meta, tensors = dict(fh.metadata()), {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    bad = tmp_path / "bad"
    bad.mkdir()
    field = json.loads(meta["field_config"])
    meta["field_config"] = json.dumps({**field, "hidden": 48})
    save_file(tensors, str(bad / "model.safetensors"), metadata=meta)
    (bad / "fit.json").write_text((run / "fit.json").read_text())
    res = invoke("render", "--model", bad, "--reader", "synthetic", "--data", data, "--out", tmp_path / "r1")
    assert res.exit_code == 2 and "model.safetensors" in res.output and "architecture" in res.output
    assert not (tmp_path / "r1").exists()
    meta["format_version"] = "99"
    save_file(tensors, str(bad / "model.safetensors"), metadata=meta)
    res = invoke("export", "--from-model", bad, "--reader", "synthetic", "--data", data, "--out", tmp_path / "s.zarr")
    assert res.exit_code == 2 and "format_version" in res.output and not (tmp_path / "s.zarr").exists()
    # a scene whose images differ in size from the model's input
    other = tmp_path / "big"
    synthesize(SynthConfig(kind="objects", out=other, n_scenes=1, n_views=4, size=20, seed=2))
    res = invoke("render", "--model", run, "--reader", "synthetic", "--data", other, "--out", tmp_path / "r2",
                 "--source-views", "2")
    assert res.exit_code == 2 and "20x20" in res.output and "16x16" in res.output and not (tmp_path / "r2").exists()
    assert ".png" in res.output  # the line names the image file
