"""The zarr v3 dataset store (DESIGN.md section 6): schema, quantisation, codec choice, writer, reader, checks."""

from perfdata.store.reader import Store, dataset_stats, densify, open_store
from perfdata.store.schema import FORMAT_VERSION, RootAttrs, SceneAttrs
from perfdata.store.writer import WriteConfig, grid_arrays, refresh_root, write_scene

__all__ = [
    "FORMAT_VERSION", "RootAttrs", "SceneAttrs", "Store", "WriteConfig", "dataset_stats", "densify", "grid_arrays",
    "open_store", "refresh_root", "write_scene",
]
