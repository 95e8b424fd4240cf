"""pack: render folders -> WebDataset shards, read back with the webdataset library."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from perfdata.pipelines.pack import PackConfig, pack_renders

from perfdata.atomic import write_json
from perfdata.devices import split_scene_ids as split_scenes
from perfdata.errors import ConfigError, FormatVersionError, InputError
from perfdata.images import depth_to_png, labels_to_png, write_png
from perfdata.shards import FIXED_MTIME, ShardWriter, read_index, verify_shards

CLASSES = ["box", "sphere", "torus"]


def make_renders(root: Path, n_scenes: int = 6, n_views: int = 4, size: int = 12, seed: int = 0) -> Path:
    """Render folders with real PNGs; scene ids contain dots to exercise key sanitising."""
    rng = np.random.default_rng(seed)
    for s in range(n_scenes):
        sid = f"scene.{s:02d}"
        d = root / sid
        views = []
        for v in range(n_views):
            name = f"{v:05d}"
            write_png(d / f"{name}.rgb.png", rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
            write_png(d / f"{name}.depth.png", depth_to_png(rng.uniform(0.5, 3.0, (size, size))))
            write_png(d / f"{name}.mask.png", (rng.random((size, size)) > 0.5).astype(np.uint8) * 255)
            write_png(d / f"{name}.label.png", labels_to_png(rng.integers(-1, 5, (size, size))))
            views.append({"name": name, "K": np.eye(3).tolist(), "c2w": np.eye(4).tolist(), "width": size,
                          "height": size})
        write_json(d / "cameras.json", {
            "format_version": 1, "scene_id": sid, "class_name": CLASSES[s % 3], "world_from_grid": np.eye(4),
            "psnr": 30.0, "members": ["rgb.png", "depth.png", "mask.png", "label.png"], "views": views,
        })
        (d / "DONE").write_text("")
    return root


def read_shards(out: Path) -> dict[str, dict[str, bytes]]:
    index = read_index(out)
    urls = [str(out / s["name"]) for s in index["shards"]]
    samples = {}
    for sample in wds.WebDataset(urls, shardshuffle=False):
        key = sample.pop("__key__")
        sample.pop("__url__")
        sample.pop("__local_path__", None)
        assert key not in samples
        samples[key] = sample
    return samples


def test_shards_read_back_exactly(tmp_path: Path) -> None:
    renders = make_renders(tmp_path / "renders")
    res = pack_renders(renders, tmp_path / "shards", PackConfig(maxcount=5, val_fraction=0.34, seed=3))
    samples = read_shards(tmp_path / "shards")
    assert len(samples) == 24 == sum(res.n_samples.values())
    assert res.n_samples == {"train": 16, "val": 8}
    assert [s.samples for s in res.shards if s.split == "train"] == [5, 5, 5, 1]
    for key, sample in samples.items():
        sid, view = key.rsplit("_", 1)
        sid = sid.replace("scene_", "scene.")
        assert "." not in key
        for ext in ("rgb.png", "depth.png", "mask.png", "label.png"):
            assert sample[ext] == (renders / sid / f"{view}.{ext}").read_bytes()
        meta = json.loads(sample["json"])
        assert meta["scene_id"] == sid and meta["view"] == view
        assert int(sample["cls"]) == CLASSES.index(meta["class_name"]) == meta["class_id"]
    index = verify_shards(tmp_path / "shards")
    assert index["classes"] == CLASSES and index["n_samples"] == {"train": 16, "val": 8}
    for shard in index["shards"]:
        data = (tmp_path / "shards" / shard["name"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == shard["sha256"] and len(data) == shard["bytes"]


def test_split_by_scene_is_disjoint_and_deterministic(tmp_path: Path) -> None:
    renders = make_renders(tmp_path / "renders", n_scenes=10, n_views=2, size=4)
    res = pack_renders(renders, tmp_path / "shards", PackConfig(val_fraction=0.3, seed=7))
    assert len(res.scenes["val"]) == 3 and len(res.scenes["train"]) == 7
    assert not set(res.scenes["val"]) & set(res.scenes["train"])
    by_split: dict[str, set[str]] = {}
    for shard in res.shards:
        with tarfile.open(tmp_path / "shards" / shard.name) as tar:
            by_split.setdefault(shard.split, set()).update(m.name.split(".")[0].rsplit("_", 1)[0] for m in tar.getmembers())
    assert not by_split["train"] & by_split["val"]
    assert by_split["val"] == {v.replace(".", "_") for v in res.scenes["val"]}
    assert split_scenes([f"s{i}" for i in range(10)], 0.3, 7) == split_scenes([f"s{i}" for i in range(9, -1, -1)], 0.3, 7)
    assert split_scenes([f"s{i}" for i in range(10)], 0.3, 7) != split_scenes([f"s{i}" for i in range(10)], 0.3, 8)


def test_rerun_is_byte_identical(tmp_path: Path) -> None:
    renders = make_renders(tmp_path / "renders", n_scenes=3, n_views=3)
    cfg = PackConfig(maxsize=4000, val_fraction=0.0)
    a = pack_renders(renders, tmp_path / "a", cfg)
    files = lambda root: {p.relative_to(root): p.read_bytes() for p in root.rglob("*")  # noqa: E731
                          if p.is_file() and not any(q.startswith(".") for q in p.relative_to(root).parts)}
    first = files(tmp_path / "a")
    b = pack_renders(renders, tmp_path / "b", cfg)
    pack_renders(renders, tmp_path / "a", cfg)  # over its own output
    assert len(a.shards) >= 3 and a.shards == b.shards
    assert first == files(tmp_path / "b") == files(tmp_path / "a")  # index.json too: the set is named by digest
    with tarfile.open(tmp_path / "a" / a.shards[0].name) as tar:
        m = tar.getmembers()[0]
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) == (FIXED_MTIME, 0, 0, "", "", 0o444)
    assert all(s.bytes <= 4000 or s.samples == 1 for s in a.shards)


def test_incomplete_scene_left_out_and_bad_input(tmp_path: Path) -> None:
    renders = make_renders(tmp_path / "renders", n_scenes=3, n_views=2, size=4)
    (renders / "scene.01" / "DONE").unlink()
    res = pack_renders(renders, tmp_path / "s1", PackConfig(val_fraction=0.0))
    assert res.incomplete == ("scene.01",) and res.n_samples == {"train": 4, "val": 0}

    (renders / "scene.02" / "00001.mask.png").unlink()
    res = pack_renders(renders, tmp_path / "s2", PackConfig(maxcount=1, val_fraction=0.0))
    assert [(o.item, o.status) for o in res.outcomes] == [("train", "failed"), ("val", "done")]
    assert "00001.mask.png" in (res.outcomes[0].error or "") and res.index_path is None
    assert sorted(p.name for p in (tmp_path / "s2").iterdir()) == [".perfdata"]  # no shard, partial or whole

    meta = json.loads((renders / "scene.00" / "cameras.json").read_text())
    write_json(renders / "scene.00" / "cameras.json", {**meta, "format_version": 99})
    with pytest.raises(FormatVersionError, match="cameras.json"):
        pack_renders(renders, tmp_path / "s3", PackConfig())
    with pytest.raises(InputError, match="not found"):
        pack_renders(tmp_path / "nope", tmp_path / "s4", PackConfig())
    with pytest.raises(ConfigError):
        pack_renders(renders, tmp_path / "s5", PackConfig(val_fraction=1.5))


def test_writer_rejects_dotted_keys(tmp_path: Path) -> None:
    with ShardWriter(tmp_path, "train") as w, pytest.raises(ConfigError, match="no '.'"):
        w.write("a.b", {"cls": b"1"})


def test_cli_pack(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from perfdata.cli import main

    renders = make_renders(tmp_path / "renders", n_scenes=4, n_views=2, size=4)
    main(["pack", "--renders", str(renders), "--out", str(tmp_path / "s"), "--maxcount", "3",
          "--val-fraction", "0.25", "--seed", "2"])
    assert "train" in capsys.readouterr().out
    index = verify_shards(tmp_path / "s")
    assert index["n_samples"] == {"train": 6, "val": 2} and [s["samples"] for s in index["shards"]] == [3, 3, 2]
    with pytest.raises(SystemExit) as exc:
        main(["pack", "--renders", str(tmp_path / "none"), "--out", str(tmp_path / "t")])
    assert exc.value.code == 2 and "renders folder not found" in capsys.readouterr().err


def shard_keys(out: Path) -> list[list[str]]:
    """Sample keys of each shard, in index order and written order."""
    index = read_index(out)
    keys = []
    for s in index["shards"]:
        with tarfile.open(out / s["name"]) as tar:
            keys.append(list(dict.fromkeys(m.name.split(".")[0] for m in tar.getmembers())))
    return keys


def test_shards_mix_scenes_through_the_shuffle_buffer(tmp_path: Path) -> None:
    renders = make_renders(tmp_path / "renders", n_scenes=6, n_views=4, size=4)

    def pack_keys(name: str, **kw: int) -> list[list[str]]:
        pack_renders(renders, tmp_path / name, PackConfig(maxcount=4, val_fraction=0.0, **kw))
        return shard_keys(tmp_path / name)

    ordered, mixed = pack_keys("ordered", mix_bytes=0), pack_keys("mixed")
    assert all(len({k.rsplit("_", 1)[0] for k in shard}) == 1 for shard in ordered)  # scene order: 1 scene each
    flat_o, flat_m = [k for s in ordered for k in s], [k for s in mixed for k in s]
    assert sorted(flat_m) == sorted(flat_o) and flat_m != flat_o  # the same samples, in another order
    assert max(len({k.rsplit("_", 1)[0] for k in shard}) for shard in mixed) >= 3  # shards hold several scenes
    assert pack_keys("again") == mixed  # seeded
    assert pack_keys("other", seed=1) != mixed


def test_a_small_buffer_still_writes_every_sample_once(tmp_path: Path) -> None:
    members = {"rgb.png": bytes(1000), "json": b"{}"}
    with ShardWriter(tmp_path, "train", maxcount=3, mix_bytes=5000, seed=2) as w:  # ~2 samples fit the buffer
        for i in range(20):
            w.write(f"s{i:02d}", members)
    keys = []
    for s in w.shards:
        with tarfile.open(tmp_path / s.name) as tar:
            keys += list(dict.fromkeys(m.name.split(".")[0] for m in tar.getmembers()))
    assert sorted(keys) == [f"s{i:02d}" for i in range(20)] and keys != sorted(keys)
    # the buffer holds one 2560-byte sample between writes, so none is written more than one place early
    assert all(keys.index(f"s{i:02d}") >= i - 1 for i in range(20))
    with pytest.raises(ConfigError, match="written twice"), ShardWriter(tmp_path / "dup", "train", mix_bytes=1 << 20) as w:
        w.write("a", members)
        w.write("a", members)
    assert not list((tmp_path / "dup").glob("*.tar"))
