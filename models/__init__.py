"""Fields and their maths (installed as `perfdata.models`): pure functions over tensors, no I/O, no device
choice, no config objects.

- `sh`: real spherical harmonics up to degree 2 and SH -> colour.
- `volrend`: alpha compositing shared by every field (dense `(n_rays, n_samples)` and packed variants).
- `sampling`: ray-box intersection, 8-corner trilinear interpolation over flat voxel rows (custom autograd).
- `plenoxel`: the sparse Plenoxel grid, its acceleration structure and inference rendering.
- `plenoxel_train`: the differentiable render used by fitting, TV, coarse-to-fine resampling.
- `fused`, `fused_kernels`: the fused render (Warp kernels for CPU and CUDA: forward, backward, inference) that
  `plenoxel` and `plenoxel_train` dispatch to, with the plain path as reference and fallback.
- `background`: the multi-sphere (MSI) background outside the cube (Plenoxels / PeRFception, svox2 layout).
- `optim`: the sparse per-voxel RMSProp optimiser.
- `metrics`: PSNR, SSIM, depth abs-rel.
"""
