"""Import of released PeRFception scene folders into the dataset store, without running pickled code or a GPU.

A scene folder (`plenoxel_co3d_<seq>/`, found as PATH itself, PATH/*/ or PATH/NN/*/) holds:
- `last.ckpt`: a PyTorch-Lightning checkpoint; `state_dict` has `model.links_idx` int64 [N] = x*R*R + y*R + z,
  `model.density_data` f32 [N, 1], `model.sh_data` uint8 [N, 27], optionally `model.background_links` int32
  [1024, 512] and `model.background_data` uint8 [M, 16, 4]; the top level has `model.sh_data_min` /
  `model.sh_data_scale` [1, 27] (value = q * scale + min -- the store's own quantisation, so SH bytes are copied
  as released), `model.background_data_min` / `_scale` for the background's bytes (imported into the scene's
  `background/` group as released, `perfdata.store.background`; rendered by `perfdata.models.background`),
  and `reso_idx`. Tensors may have been saved on CUDA: loaded with map_location="cpu".
- side files: `trans_info.npz` (pcd_mean, scene_scale, T, frame_ids), `label_info.npz` (class_label, sscale,
  cameras), `class_info.txt` (class name), `results.json` (metrics).

Loading: `torch.load(weights_only=True)`; if that refuses the file, a restricted unpickler that resolves only
torch's tensor/storage rebuild functions, dtypes, numpy arrays and plain containers. Any other global (e.g.
`os.system` in a `__reduce__`) is refused before it is called, with an InputError naming the file.

world_from_grid (assumption, following PeRFception's CO3D pipeline): the fit frame is
g = (A p + t - pcd_mean) / scene_scale, where T = [[A, t], [0, 1]] is applied to source (CO3D world) points p
first. Hence world_from_grid = inv(T) @ [[scene_scale * I, pcd_mean], [0, 1]], mapping grid coords in
[-1, 1]^3 to the CO3D world frame (CO3D's frame is defined up to scale, so it is not metric). Without
trans_info.npz, label_info.npz's (T, sscale) give g = sscale * (A p + t) (PeRFception's camera-only
normalisation); without either it is the identity. Which one was used is recorded in the scene's extra attrs.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from perfdata.pipelines.export import ExportConfig, ExportResult, finish_root, run_scene_jobs

from perfdata.errors import InputError
from perfdata.store.background import BackgroundArrays
from perfdata.store.background import from_released as background_from_released
from perfdata.store.location import Location
from perfdata.store.quant import choose_density_dtype
from perfdata.store.schema import SceneAttrs
from perfdata.store.writer import SceneArrays, write_scene

CKPT = "last.ckpt"
CO3D_RESO = 256
REQUIRED_KEYS = ("model.links_idx", "model.density_data", "model.sh_data", "model.sh_data_min", "model.sh_data_scale")
BACKGROUND_KEYS = ("model.background_links", "model.background_data", "model.background_data_min",
                   "model.background_data_scale")

_SAFE_GLOBALS = {
    ("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "slice"),
    ("builtins", "complex"), ("builtins", "bytearray"), ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"), ("torch", "Size"), ("torch", "device"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"), ("numpy", "ndarray"),
    ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
}


class RefusedGlobal(pickle.UnpicklingError):
    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.qualname = f"{module}.{name}"


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the allow-listed globals (torch storages are mapped by torch before they get here)."""

    def find_class(self, module: str, name: str) -> Any:
        import torch

        module = "builtins" if module == "__builtin__" else module  # protocol-2 pickles name it so
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if (module, name) not in _SAFE_GLOBALS:
            raise RefusedGlobal(module, name)
        return super().find_class(module, name)


class RestrictedPickle:
    """A stand-in for the `pickle` module, for torch.load(pickle_module=...)."""

    Unpickler = RestrictedUnpickler

    @staticmethod
    def load(file: Any, **kwargs: Any) -> Any:
        return RestrictedUnpickler(file, **kwargs).load()


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's top-level dict, tensors on CPU; refuses pickles that reference anything else."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=RestrictedPickle)
        except RefusedGlobal as exc:
            raise InputError(path, f"refused to unpickle: it references {exc.qualname} (not tensor data)") from None
        except Exception as exc:  # noqa: BLE001 -- any other failure is an unreadable file
            raise InputError(path, f"not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    except Exception as exc:  # noqa: BLE001
        raise InputError(path, f"not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise InputError(path, f"checkpoint holds a {type(obj).__name__}, expected a dict")
    return obj


def checkpoint_tensors(path: Path) -> dict[str, np.ndarray]:
    """The required tensors (and background ones when present) as numpy, keys as in the checkpoint."""
    ckpt = load_checkpoint(path)
    state = ckpt.get("state_dict", {})
    pick: Callable[[str], Any] = lambda k: state[k] if k in state else ckpt.get(k)  # noqa: E731
    missing = [k for k in REQUIRED_KEYS if pick(k) is None]
    if missing:
        raise InputError(path, f"checkpoint lacks {', '.join(missing)}")
    out = {k: np.asarray(pick(k).detach().cpu().numpy()) for k in REQUIRED_KEYS}
    for k in BACKGROUND_KEYS:
        if pick(k) is not None:
            value = pick(k)
            out[k] = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value)
    if ckpt.get("reso_idx") is not None:
        out["reso_idx"] = np.asarray(int(ckpt["reso_idx"]))
    return out


def decode_links(links: np.ndarray, reso: int) -> np.ndarray:
    """(n,) int64 x*R*R + y*R + z -> (n, 3) uint16 (x, y, z)."""
    return np.stack([links // (reso * reso), (links // reso) % reso, links % reso], axis=1).astype(np.uint16)


def world_from_trans_info(folder: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """world_from_grid (see module doc) and extras (frame_ids) from trans_info.npz; identity without it."""
    path = folder / "trans_info.npz"
    if not path.is_file():
        return _world_from_label_info(folder)
    with np.load(path, allow_pickle=False) as z:
        try:
            mean, scale = np.asarray(z["pcd_mean"], np.float64).reshape(3), float(z["scene_scale"])
            T = np.asarray(z["T"], np.float64) if "T" in z.files else np.eye(4)
        except (KeyError, ValueError) as exc:
            raise InputError(path, f"needs pcd_mean (3,), scene_scale and T (4, 4) ({exc})") from None
        frames = [int(f) for f in np.asarray(z["frame_ids"]).ravel()] if "frame_ids" in z.files else []
    if T.shape == (3, 4):
        T = np.vstack([T, [0.0, 0.0, 0.0, 1.0]])
    if T.shape != (4, 4) or not np.isfinite(T).all() or not scale > 0:
        raise InputError(path, "T must be a finite (4, 4) transform and scene_scale positive")
    norm = np.eye(4)
    norm[:3, :3] *= scale
    norm[:3, 3] = mean
    return np.linalg.inv(T) @ norm, {"frame_ids": frames}


def _world_from_label_info(folder: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Without trans_info.npz: label_info.npz's camera similarity (T, sscale), g = sscale * (A p + t), as
    PeRFception's camera-only normalisation does (its extra cam_scale_factor is not recorded, so assumed 1);
    identity when neither file is there."""
    path = folder / "label_info.npz"
    if not path.is_file():
        return np.eye(4), {"world_from_grid": "identity (no trans_info.npz or label_info.npz)"}
    with np.load(path, allow_pickle=False) as z:
        if "T" not in z.files or "sscale" not in z.files:
            return np.eye(4), {"world_from_grid": "identity (label_info.npz lacks T / sscale)"}
        T, sscale = np.asarray(z["T"], np.float64), float(z["sscale"])
    if T.shape != (4, 4) or not np.isfinite(T).all() or not sscale > 0:
        raise InputError(path, "T must be a finite (4, 4) transform and sscale positive")
    return np.linalg.inv(T) @ np.diag([1 / sscale, 1 / sscale, 1 / sscale, 1.0]), {
        "world_from_grid": "from label_info.npz (T, sscale; cam_scale_factor assumed 1)"}


def side_info(folder: Path) -> dict[str, Any]:
    """class_name, metrics and extras from class_info.txt, results.json and label_info.npz."""
    info: dict[str, Any] = {"class_name": None, "metrics": {}, "extra": {}}
    if (folder / "class_info.txt").is_file():
        lines = [ln.strip() for ln in (folder / "class_info.txt").read_text().splitlines() if ln.strip()]
        info["class_name"] = lines[0] if lines else None
    if (folder / "results.json").is_file():
        try:
            results = json.loads((folder / "results.json").read_text())
        except ValueError as exc:
            raise InputError(folder / "results.json", f"not valid JSON ({exc})") from None
        info["metrics"] = _flat_metrics(results)
    if (folder / "label_info.npz").is_file():
        with np.load(folder / "label_info.npz", allow_pickle=False) as z:
            for key in ("class_label", "sscale"):
                if key in z.files and z[key].size == 1:
                    info["extra"][key] = z[key].item()
    return info


def _flat_metrics(obj: Any, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    items = obj.items() if isinstance(obj, dict) else []
    for k, v in items:
        key = f"{prefix}{str(k).lower()}"
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = float(v)
        elif isinstance(v, dict):
            out.update(_flat_metrics(v, key + "_"))
    return out


def perfception_scene(folder: Path, reso: int = CO3D_RESO) -> SceneArrays:
    """One released scene folder as store arrays (SH bytes and their min / scale copied as released)."""
    ckpt_path = folder / CKPT
    t = checkpoint_tensors(ckpt_path)
    links = t["model.links_idx"].astype(np.int64).ravel()
    density = t["model.density_data"].astype(np.float32).reshape(-1)
    sh = t["model.sh_data"]
    n = len(links)
    if density.shape != (n,) or sh.shape[0] != n or sh.dtype != np.uint8:
        raise InputError(ckpt_path, f"links {links.shape}, density {t['model.density_data'].shape} and sh "
                         f"{sh.dtype}{sh.shape} disagree (want [N], [N, 1], uint8 [N, K])")
    sh_min, sh_scale = t["model.sh_data_min"].reshape(-1), t["model.sh_data_scale"].reshape(-1)
    if sh_min.shape != (sh.shape[1],) or sh_scale.shape != (sh.shape[1],):
        raise InputError(ckpt_path, f"sh_data_min / sh_data_scale must be [1, {sh.shape[1]}]")
    if n and (links.min() < 0 or links.max() >= reso**3):
        raise InputError(ckpt_path, f"links_idx outside a {reso}^3 grid (max {int(links.max())})")
    order = np.argsort(links, kind="stable")
    dtype = choose_density_dtype(density)
    arrays = {"coords": decode_links(links[order], reso), "density": density[order].astype(dtype),
              "sh": np.ascontiguousarray(sh[order])}
    bg = released_background(t, ckpt_path)
    world_from_grid, extra = world_from_trans_info(folder)
    info = side_info(folder)
    extra.update(info["extra"])
    if "reso_idx" in t:
        extra["reso_idx"] = int(t["reso_idx"])
    stored = arrays["density"].astype(np.float64)
    attrs = SceneAttrs(
        reso=(reso, reso, reso), world_from_grid=tuple(tuple(float(v) for v in r) for r in world_from_grid),
        n_voxels=n, sh_degree=int(round(np.sqrt(sh.shape[1] / 3))) - 1, class_name=info["class_name"],
        metrics=info["metrics"], source=f"perfception:{folder}", extra=extra,
        quantisation={"sh_bits": 8, "sh_max_abs_err": 0.0, "density_dtype": dtype.name,
                      "density_max_abs_err": float(np.abs(stored - density[order]).max()) if n else 0.0},
    )
    array_attrs = {"sh": {"sh_min": sh_min.astype(float).tolist(), "sh_scale": sh_scale.astype(float).tolist()}}
    return SceneArrays(arrays, array_attrs, attrs, bg)


def released_background(t: dict[str, np.ndarray], ckpt_path: Path) -> BackgroundArrays | None:
    """The checkpoint's MSI background (`model.background_data` uint8 [M, L, 4] with `_min` / `_scale`, and
    `model.background_links` [2H, H]) for the store's background group, bytes as released; None without one."""
    if "model.background_data" not in t:
        return None
    missing = [k for k in ("model.background_data_min", "model.background_data_scale") if k not in t]
    if missing:
        raise InputError(ckpt_path, f"checkpoint has model.background_data but lacks {', '.join(missing)}")
    return background_from_released(t["model.background_data"], t.get("model.background_links"),
                                    t["model.background_data_min"], t["model.background_data_scale"], str(ckpt_path))


def find_scene_folders(path: str | Path) -> list[Path]:
    """PATH itself if it holds last.ckpt, else its sub-folders (and chunk folders' sub-folders) that do."""
    root = Path(path)
    if not root.exists():
        raise InputError(root, "not found")
    if (root / CKPT).is_file():
        return [root]
    found = sorted({p.parent for pattern in (f"*/{CKPT}", f"*/*/{CKPT}") for p in root.glob(pattern)})
    if not found:
        raise InputError(root, f"no PeRFception scene folder (with {CKPT}) here or one or two levels down")
    return found


def scene_id_of(folder: Path) -> str:
    """plenoxel_co3d_<seq> -> co3d_<seq>."""
    return folder.name.removeprefix("plenoxel_")


def import_perfception(path: str | Path, out: str, cfg: ExportConfig, reso: int = CO3D_RESO) -> ExportResult:
    """Import every PeRFception scene folder under `path` into the store `out` (skips complete scenes)."""
    folders = find_scene_folders(path)
    ids = [scene_id_of(f) for f in folders]
    if len(set(ids)) != len(ids):
        raise InputError(path, "two scene folders share a name (chunk folders overlap?)")
    if cfg.scenes:
        keep = set(cfg.scenes)
        folders = [f for f in folders if scene_id_of(f) in keep or f.name in keep]
    loc = Location(out, cfg.write.storage_options)
    dataset = "perfception" if cfg.dataset == "perfdata" else cfg.dataset

    by_id = {scene_id_of(f): f for f in folders}

    def job(scene_id: str) -> dict[str, Any]:
        scene = perfception_scene(by_id[scene_id], reso)
        write_scene(loc, scene_id, scene, cfg.write)
        return {"n_voxels": scene.attrs.n_voxels}

    results = run_scene_jobs(loc, list(by_id), job, cfg)
    root = finish_root(loc, dataset, cfg.dry_run)
    return ExportResult(out, tuple(results), root)
