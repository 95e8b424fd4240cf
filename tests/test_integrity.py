"""Issue 14, failure by failure, on real files: fit folders -> `perfdata export` (zarr) -> render -> pack, then
bytes flipped in a real chunk, a real shard truncated at a sample boundary, runs killed with SIGKILL at a chosen
point, a read-only folder (for root: `capsh --drop=cap_dac_override`), a full disk (a small tmpfs in a private
mount namespace: `unshare -m`), ids from the data that try to escape, and the modes of what is written.
Tests that need capsh / unshare skip cleanly where they are unavailable."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import warnings
from pathlib import Path

import pytest
import requests
import zarr

from perfdata.cli import main
from perfdata.errors import ChecksumError, InputError
from perfdata.records.fit import FitRecord, write_fit
from perfdata.shardcheck import open_shard_set
from perfdata.shards import read_index, verify_shards

sys.path.insert(0, str(Path(__file__).resolve().parent / "perfdata" / "store"))
from store_grids import shell_grid  # noqa: E402

PERFDATA = [sys.executable, "-c", "from perfdata.cli import main; main()"]
CLASSES = ("box", "sphere")


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """(exit code, stdout + stderr) of `perfdata ARGS` run in this process."""
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
        raise SystemExit(0)
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out + out.err


def killed_run(args: list[str], target: str, after: int, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`perfdata ARGS` in a child process that SIGKILLs itself right after the `after`-th call of `target`
    ("module:attr" or "module:Class.method") returns: a kill -9 at a chosen point, no cleanup code runs."""
    module, attr = target.split(":")
    owner, _, name = attr.rpartition(".")
    code = f"""
import os, signal, sys
import {module} as m
holder = getattr(m, {owner!r}) if {owner!r} else m
orig = getattr(holder, {name!r})
calls = [0]
def wrapped(*a, **k):
    out = orig(*a, **k)
    calls[0] += 1
    if calls[0] >= {after}:
        os.kill(os.getpid(), signal.SIGKILL)
    return out
setattr(holder, {name!r}, wrapped)
from perfdata.cli import main
main(sys.argv[1:])
"""
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})


def visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """fits/ (4 scenes, 2 classes) -> store.zarr -> renders/ (3 views of 16 px) -> shards/ (2 samples a shard)."""
    from perfdata.pipelines.export import ExportConfig, export_fits
    from perfdata.pipelines.pack import PackConfig, pack_renders
    from perfdata.pipelines.render import RenderConfig, render_store

    root = tmp_path_factory.mktemp("integrity")
    for i in range(4):
        folder = root / "fits" / f"obj_{i}"
        folder.mkdir(parents=True)
        shell_grid(24, seed=i).save(folder / "grid.npz")
        write_fit(folder, FitRecord(scene_id=f"obj_{i}", method="plenoxel", class_name=CLASSES[i % 2],
                                    metrics={"psnr": 30.0}))
        (folder / "DONE").write_text("")
    export_fits(root / "fits", str(root / "store.zarr"), ExportConfig())
    render = render_store(root / "store.zarr", root / "renders",
                          RenderConfig(n_views=3, size=16, poses="orbit", device="cpu", what=("rgb", "mask")))
    assert not render.failed, render.failed
    pack_renders(root / "renders", root / "shards", PackConfig(maxcount=2, val_fraction=0.25))
    return {"root": root, "fits": root / "fits", "store": root / "store.zarr", "renders": root / "renders",
            "shards": root / "shards"}


# 1 -------------------------------------------------------------------------------------- silent corruption


def test_1_flipped_bytes_inside_a_chunk_are_found_and_named(pipeline: dict[str, Path], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from perfdata.downstream.grids import StoreGridDataset
    from perfdata.pipelines.render import RenderConfig, render_store

    from perfdata.store import open_store

    store = tmp_path / "store.zarr"
    shutil.copytree(pipeline["store"], store)
    chunks = sorted((p for p in (store / "scenes" / "obj_1" / "sh" / "c").rglob("*") if p.is_file()),
                    key=lambda p: p.stat().st_size)
    chunk = chunks[-1]  # the largest chunk of sh: flip 16 bytes in its middle, not its header
    data = bytearray(chunk.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 16] = bytes(b ^ 0x5A for b in data[middle:middle + 16])
    chunk.write_bytes(bytes(data))
    key = chunk.relative_to(store).as_posix()

    code, out = run_cli(["validate", store], capsys)
    assert code == 2 and key in out and "checksum mismatch" in out
    result = render_store(store, tmp_path / "renders", RenderConfig(n_views=2, size=16, poses="orbit", device="cpu"))
    assert [s for s, _ in result.failed] == ["obj_1"] and key in result.failed[0][1]
    assert sorted(result.rendered) == ["obj_0", "obj_2", "obj_3"]  # the others went on
    with pytest.raises(InputError, match=key):
        StoreGridDataset(open_store(str(store)), ["obj_1"], reso=8, task="cls", classes=CLASSES)[0]
    code, out = run_cli(["train", "cls3d", "--store", store, "--out", tmp_path / "t", "--epochs", "1",
                         "--reso", "8", "--device", "cpu"], capsys)
    assert code == 2 and key in out


# 2 ------------------------------------------------------------------------------------- atomic shard sets


def test_2_a_repack_killed_midway_leaves_the_old_set_whole(pipeline: dict[str, Path], tmp_path: Path) -> None:
    from perfdata.downstream.loaders import ShardData, ShardLoaderConfig, shard_pipeline
    from perfdata.pipelines.pack import PackConfig, pack_renders

    shards = tmp_path / "shards"
    shutil.copytree(pipeline["shards"], shards)
    before = (shards / "index.json").read_bytes()
    run = killed_run(["pack", "--renders", pipeline["renders"], "--out", shards, "--maxcount", "1",
                      "--val-fraction", "0.25"], "perfdata.shards:ShardWriter._finish", after=3)
    assert run.returncode == -signal.SIGKILL, run.stderr
    assert (shards / "index.json").read_bytes() == before  # index.json switches last
    assert len(list(shards.glob(".pack-*"))) == 1  # the killed run's staging, hidden
    index = verify_shards(shards)  # every shard it lists: its own, whole
    data = ShardData.open(shards)
    n = sum(len(b["y"]) for b in shard_pipeline(data, ShardLoaderConfig("train", batch_size=4, shuffle_buffer=0)))
    assert n == index["n_samples"]["train"] == 9

    res = pack_renders(pipeline["renders"], shards, PackConfig(maxcount=1, val_fraction=0.25))  # the rerun
    assert not list(shards.glob(".pack-*"))  # the dead run's staging is gone
    new = verify_shards(shards)
    assert len(new["shards"]) == 12 and len(res.shards) == 12
    assert visible(shards) == ["index.json", new["shard_set"]]  # the old set is gone, only whole sets remain


def test_2_an_index_naming_shards_of_another_set_is_refused(pipeline: dict[str, Path], tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    shutil.copytree(pipeline["shards"], shards)
    index = json.loads((shards / "index.json").read_text())
    other = shards / "set-0000000000000000"
    other.mkdir()
    first = shards / index["shards"][0]["name"]
    shutil.copy(first, other / first.name)
    index["shards"][0]["name"] = f"{other.name}/{first.name}"
    (shards / "index.json").write_text(json.dumps(index))
    with pytest.raises(InputError, match="not part of the index's shard set"):
        open_shard_set(shards)


# 3 -------------------------------------------------------------------------------- truncated shards, sha256


def _truncate_at_sample_boundary(shard: Path) -> int:
    """Cut a real shard just before its last sample's first header; returns the samples left."""
    with tarfile.open(shard) as tar:
        members = tar.getmembers()
    keys = [m.name.split(".", 1)[0] for m in members]
    last = keys.index(keys[-1])
    with open(shard, "r+b") as fh:
        fh.truncate(members[last].offset)
    return len(dict.fromkeys(keys[:last]))


def test_3_a_shard_truncated_at_a_sample_boundary_is_refused(pipeline: dict[str, Path], tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from perfdata.downstream.loaders import ShardData, ShardLoaderConfig, shard_pipeline

    shards = tmp_path / "shards"
    shutil.copytree(pipeline["shards"], shards)
    index = read_index(shards)
    entry = next(s for s in index["shards"] if s["split"] == "train" and s["samples"] == 2)
    shard = shards / entry["name"]
    left = _truncate_at_sample_boundary(shard)
    assert left == 1
    code, out = run_cli(["train", "cls2d", "--shards", shards, "--out", tmp_path / "t", "--epochs", "1",
                         "--size", "8", "--device", "cpu"], capsys)
    assert code == 2 and Path(entry["name"]).name in out and f"index.json says {entry['bytes']}" in out
    assert not (tmp_path / "t" / "metrics.json").exists()

    # an index made to agree with the truncated file's size and sha256: the sample count still tells
    entry.update(bytes=shard.stat().st_size, sha256=__import__("hashlib").sha256(shard.read_bytes()).hexdigest())
    (shards / "index.json").write_text(json.dumps(index))
    cfg = ShardLoaderConfig("train", batch_size=4, shuffle_buffer=0)
    with pytest.raises(ChecksumError, match=rf"{Path(entry['name']).name}: holds 1 samples, index.json says 2"):
        list(shard_pipeline(ShardData.open(shards), cfg))
    code, out = run_cli(["validate", shards], capsys)
    assert code == 2 and "holds1samples,index.jsonsays2" in "".join(c for c in out if c.isascii() and not c.isspace())
    code, out = run_cli(["validate", pipeline["shards"]], capsys)
    assert code == 0 and "7 shards, 12 samples" in out


def test_3_a_wrong_sha256_is_found_without_verify(pipeline: dict[str, Path], tmp_path: Path) -> None:
    from perfdata.downstream.loaders import ShardData, ShardLoaderConfig, shard_pipeline

    shards = tmp_path / "shards"
    shutil.copytree(pipeline["shards"], shards)
    index = read_index(shards)
    index["shards"][0]["sha256"] = "0" * 64
    (shards / "index.json").write_text(json.dumps(index))
    data = ShardData.open(shards)  # sizes agree: opens
    with pytest.raises(ChecksumError, match="sha256"):
        list(shard_pipeline(data, ShardLoaderConfig(index["shards"][0]["split"], batch_size=2, shuffle_buffer=0)))
    with pytest.raises(ChecksumError, match="sha256"):
        ShardData.open(shards, verify=True)  # --verify: before the first sample


# 4 ----------------------------------------------------------------------------- OS errors are named errors


def test_4_download_outdir_naming_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from perfdata.download.mirror import index_directory

    scene = tmp_path / "mirror" / "05" / "plenoxel_co3d_1_2_305"
    scene.mkdir(parents=True)
    (scene / "last.ckpt").write_bytes(b"x" * 1000)
    index_directory(tmp_path / "mirror")
    (tmp_path / "afile").write_text("not a folder")
    code, out = run_cli(["download", "--dataset", "co3d", "--chunks", "5", "--outdir", tmp_path / "afile",
                         "--source", tmp_path / "mirror"], capsys)
    assert code == 2 and f"error: {tmp_path / 'afile'}: is a file, not a folder" in out
    assert "Traceback" not in out
    run_cli(["download", "--dataset", "co3d", "--chunks", "5", "--outdir", tmp_path / "out", "--source",
             tmp_path / "mirror"], capsys)
    assert (tmp_path / "out" / "05" / "plenoxel_co3d_1_2_305" / "last.ckpt").is_file()
    assert not (tmp_path / "out" / "_in_progress").exists()  # 5: a finished download leaves no bookkeeping dirs


def _readonly_shell(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    if shutil.which("capsh") is None:
        pytest.skip("running as root without capsh: cannot make a folder read-only for this process")
    return ["capsh", "--drop=cap_dac_override", "--", "-c", " ".join(f"'{c}'" for c in cmd)]


def test_4_export_into_a_read_only_folder(pipeline: dict[str, Path], tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        run = subprocess.run(_readonly_shell([*PERFDATA, "export", "--fits", str(pipeline["fits"]), "--out",
                                              str(locked / "s.zarr")]), capture_output=True, text=True, timeout=120)
    finally:
        locked.chmod(0o755)
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith(f"error: {locked}") and "permission denied" in run.stderr
    assert "Traceback" not in run.stderr and not list(locked.iterdir())


def _tmpfs_available() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                           capture_output=True)
    return probe.returncode == 0


def _on_full_disk(mount: Path, size: str, cmd: list[str]) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run `cmd` with a `size` tmpfs at `mount` in a private mount namespace; (run, files left on the tmpfs,
    hidden ones included). The runner's failure records left there are copied to stderr."""
    if not _tmpfs_available():
        pytest.skip("no private mount namespace with tmpfs here (unshare -m / mount)")
    mount.mkdir()
    script = (f"mount -t tmpfs -o size={size} tmpfs '{mount}' && "
              + " ".join(f"'{c}'" for c in cmd) + f"; rc=$?; find '{mount}' -mindepth 1 >&2; "
              f"find '{mount}' -name FAILED.json -exec cat {{}} + >&2; exit $rc")
    run = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=180)
    left = [line for line in run.stderr.splitlines() if line.startswith(str(mount))]
    return run, left


def test_4_export_and_pack_on_a_full_disk(pipeline: dict[str, Path], tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    run, left = _on_full_disk(disk, "96k", [*PERFDATA, "export", "--fits", str(pipeline["fits"]), "--out",
                                            str(disk / "s.zarr"), "--executor", "threads:2"])
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    assert f'"error": "{disk}/s.zarr/scenes/obj_0: no space left on device"' in run.stderr  # named, recorded
    assert "Traceback" not in out and "Task was destroyed" not in out
    # no store, no scenes/.<id>.*.tmp: only the runner's failure records (hidden, read by `perfdata status`)
    assert left and all(p.startswith(str(disk / ".s.zarr.perfdata")) for p in left), left
    disk2 = tmp_path / "disk2"
    run, left = _on_full_disk(disk2, "48k", [*PERFDATA, "pack", "--renders", str(pipeline["renders"]), "--out",
                                             str(disk2 / "shards"), "--maxcount", "1", "--mix-mb", "0"])
    # (--mix-mb 0: shards go out as samples arrive, so the disk fills while a shard is written, not all at once)
    out = run.stdout + run.stderr
    assert run.returncode == 1 and f'"error": "{disk2}/shards/.pack-' in run.stderr, out
    assert ': no space left on device"' in run.stderr
    assert "Traceback" not in out  # no shard, no index.json, no staging: only the runner's failure records
    shards = str(disk2 / "shards")
    assert left and [p for p in left if p != shards and not p.startswith(f"{shards}/.perfdata")] == []


def test_4_fit_resolution_the_memory_cannot_hold(shared_data, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_cli(["fit", "--reader", "blender", "--data", shared_data / "lego", "--out", tmp_path / "f",
                         "--resolution", "100000", "--device", "cpu"], capsys)
    assert code == 2 and "--resolution 100000: a fit needs at least 13.0 PB" in out and "memory" in out
    assert not (tmp_path / "f").exists()


def test_4_mirror_serve_refuses_a_nul_byte(tmp_path: Path) -> None:
    (tmp_path / "index.json").write_text("{}")
    server = subprocess.Popen([*PERFDATA, "mirror", "serve", str(tmp_path), "--port", "0"], text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = server.stdout.readline() if server.stdout else ""
        url = line.split(" at ", 1)[1].split()[0]
        assert requests.get(f"{url}/index.json%00", timeout=10).status_code == 404
        assert requests.get(f"{url}/index.json%00.txt", timeout=10).status_code == 404
        assert requests.get(f"{url}/index.json", timeout=10).json() == {}  # still serving
    finally:
        server.send_signal(signal.SIGINT)
        _, err = server.communicate(timeout=30)
    assert "Traceback" not in err


# 5 ------------------------------------------------------------------------ temporary names never reach readers


def test_5_a_killed_export_leaves_nothing_a_reader_lists(pipeline: dict[str, Path], tmp_path: Path) -> None:
    from perfdata.pipelines.export import ExportConfig, export_fits

    from perfdata.store.validate import validate_store

    store = tmp_path / "s.zarr"
    run = killed_run(["export", "--fits", pipeline["fits"], "--out", store],
                     "perfdata.store.writer:write_chunks", after=2)
    assert run.returncode == -signal.SIGKILL, run.stderr
    staging = list(tmp_path.glob(".s.zarr.obj_0.*.tmp"))
    assert len(staging) == 1  # the half-written group: hidden, beside the store, outside its hierarchy
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # zarr warns about unknown objects in a group: there are none
        assert list(zarr.open_group(str(store), mode="r")["scenes"].group_keys()) == []
    export_fits(pipeline["fits"], str(store), ExportConfig())  # the rerun cleans it up
    assert not list(tmp_path.glob(".*.tmp*"))
    assert sorted(zarr.open_group(str(store), mode="r")["scenes"].group_keys()) == [f"obj_{i}" for i in range(4)]
    assert validate_store(str(store)).ok


# 7 ------------------------------------------------------------------------------------------- consistency


def test_7_non_finite_float_options_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["fit", "--reader", "blender", "--data", tmp_path, "--out", tmp_path / "f", "--max-seconds", "nan"],
                 ["render", "--store", tmp_path, "--out", tmp_path / "r", "--min-psnr", "inf"],
                 ["train", "cls2d", "--shards", tmp_path, "--out", tmp_path / "t", "--lr", "-inf"]):
        code, out = run_cli(args, capsys)
        assert code == 2 and "is not a finite number" in out, (args, out)
    assert not list(tmp_path.iterdir())


def test_7_an_undecodable_png_is_named(shared_data, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from perfdata.readers import load_scenes

    lego = shared_data / "lego"
    meta = json.loads((lego / "transforms_train.json").read_text())
    meta["frames"] = meta["frames"][:3]
    scene = tmp_path / "lego3"
    (scene / "train").mkdir(parents=True)
    (scene / "transforms_train.json").write_text(json.dumps(meta))
    for frame in meta["frames"][1:]:
        shutil.copy(lego / f"{frame['file_path']}.png", scene / f"{frame['file_path']}.png")
    (scene / f"{meta['frames'][0]['file_path']}.png").write_bytes(os.urandom(4000))  # undecodable
    with pytest.raises(InputError, match=r"r_0\.png: cannot read image: not a PNG/JPEG image") as exc:
        list(load_scenes("blender", scene))
    assert "pip install" not in str(exc.value)
    code, out = run_cli(["scenes", "inspect", "--reader", "blender", "--data", scene], capsys)
    assert code == 2 and "r_0.png: cannot read image: not a PNG/JPEG image" in out
    (scene / "train" / "r_0.png").write_bytes((lego / "train" / "r_0.png").read_bytes()[:5000])  # truncated
    with pytest.raises(InputError, match=r"r_0\.png: cannot read image: damaged PNG image"):
        next(load_scenes("blender", scene)).frames[0].load_image()


# 8 ------------------------------------------------------------------------------------ ids from the data


def test_8_a_co3d_sequence_name_that_escapes_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "a" / "b" / "co3d"
    category = data / "teddybear"
    category.mkdir(parents=True)
    escaped = category / "../../../escaped"
    escaped.mkdir(parents=True)  # "with such a folder present"
    rows = [{"sequence_name": "../../../escaped", "frame_number": 1, "image": {"path": "x.jpg", "size": [8, 8]}}]
    for name in ("frame_annotations.jgz", "sequence_annotations.jgz"):
        with gzip.open(category / name, "wt") as fh:
            json.dump(rows, fh)
    code, out = run_cli(["fit", "--reader", "co3d", "--data", data, "--out", tmp_path / "out" / "fits",
                         "--steps", "1", "--device", "cpu"], capsys)
    assert code == 2 and "'../../../escaped'" in out and "refusing to use it as a name" in out
    assert list(escaped.iterdir()) == [] and not (tmp_path / "out").exists()


def test_8_every_stage_refuses_an_unsafe_id_where_it_becomes_a_path(tmp_path: Path) -> None:
    from perfdata.pipelines.render import RenderConfig, render_scene, render_store
    from perfdata.pipelines.render_source import MemorySource

    from perfdata.errors import UnsafePathError
    from perfdata.markers import Markers
    from perfdata.names import scene_path
    from perfdata.shards import sample_key
    from perfdata.store.location import Location

    for bad in ("../x", "/etc", "a/b", "..", "x\x00y", "C:x", "n" * 201):
        with pytest.raises(UnsafePathError):
            scene_path(tmp_path / "fits", bad)  # fit folders, render folders
        with pytest.raises(UnsafePathError):
            Location(str(tmp_path / "s.zarr")).scene_key(bad)  # store groups (export, label)
        with pytest.raises(UnsafePathError):
            sample_key(bad, "00000")  # shard keys
        with pytest.raises(UnsafePathError):
            Markers.in_folder(tmp_path / "out", "render").item_dir(bad)  # every runner item
    (tmp_path / "out").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "out" / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafePathError, match="outside"):
        scene_path(tmp_path / "out", "link")
    source = MemorySource({"../x": shell_grid(8)}, {})
    cfg = RenderConfig(device="cpu", n_views=1, size=8, poses="orbit")
    with pytest.raises(UnsafePathError, match="refusing"):
        render_scene(source, str(tmp_path / "out"), cfg, None, "../x")
    with pytest.raises(UnsafePathError, match="refusing"):
        render_store(source, tmp_path / "out", cfg)
    assert not (tmp_path / "x").exists() and sorted(p.name for p in (tmp_path / "out").iterdir()) == ["link"]


# 9 ---------------------------------------------------------------------------------- shareable outputs


def _modes(root: Path) -> set[str]:
    return {f"{'d' if p.is_dir() else 'f'}{p.stat().st_mode & 0o777:o}" for p in [root, *root.rglob("*")]}


def test_9_outputs_take_the_umask(pipeline: dict[str, Path], tmp_path: Path) -> None:
    from perfdata.pipelines.export import ExportConfig, export_fits
    from perfdata.pipelines.pack import PackConfig, pack_renders

    from perfdata import atomic

    old = os.umask(0o022)
    try:
        export_fits(pipeline["fits"], str(tmp_path / "s.zarr"), ExportConfig(scenes=("obj_0",)))
        pack_renders(pipeline["renders"], tmp_path / "shards", PackConfig(maxcount=4))
        assert _modes(tmp_path / "s.zarr") == {"d755", "f644"}
        assert _modes(tmp_path / "shards") == {"d755", "f644"}
        os.umask(0o027)
        with atomic.atomic_dir(tmp_path / "fit" / "obj_0") as tmp:  # how fit writes a scene folder
            shell_grid(8).save(tmp / "grid.npz")
            atomic.write_json(tmp / "fit.json", {"status": "done", "wall_seconds": float("nan")})
        assert _modes(tmp_path / "fit" / "obj_0") == {"d750", "f640"}
        assert json.loads((tmp_path / "fit" / "obj_0" / "fit.json").read_text())["wall_seconds"] is None  # 7: JSON
    finally:
        os.umask(old)


def test_2_a_rerun_redoing_one_split_keeps_the_other_and_switches_whole(pipeline: dict[str, Path],
                                                                         tmp_path: Path) -> None:
    from perfdata.pipelines.pack import PackConfig, pack_renders

    shards = tmp_path / "shards"
    cfg = PackConfig(maxcount=2, val_fraction=0.25)
    first = pack_renders(pipeline["renders"], shards, cfg)
    before = read_index(shards)
    (shards / ".perfdata" / "pack" / "items" / "val" / "DONE").unlink()  # val must be written again
    again = pack_renders(pipeline["renders"], shards, cfg)
    assert [o.status for o in again.outcomes] == ["skipped", "done"]  # train kept (linked in), val rewritten
    assert read_index(shards) == before and again.shards == first.shards  # the same bytes: the same set
    assert verify_shards(shards) and visible(shards) == ["index.json", before["shard_set"]]
