"""Fields and their maths (installed as `perfdata.models`): pure functions over tensors, no I/O, no device
choice, no config objects.

- `sh`: real spherical harmonics up to degree 2 and SH -> colour.
- `volrend`: alpha compositing shared by every field (dense `(n_rays, n_samples)` and packed variants).
- `sampling`: ray-box intersection, 8-corner trilinear interpolation over flat voxel rows (custom autograd).
- `plenoxel`: the sparse Plenoxel grid, its acceleration structure and inference rendering.
- `plenoxel_train`: the differentiable render used by fitting, TV, coarse-to-fine resampling.
- `optim`: the sparse per-voxel RMSProp optimiser.
- `metrics`: PSNR, SSIM, depth abs-rel.
"""
