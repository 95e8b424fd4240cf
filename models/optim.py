"""Sparse per-voxel optimisation: RMSProp that touches only the rows with gradient (as Plenoxels does), and
merging of sparse gradients from several losses."""

from __future__ import annotations

import math

import torch
from perfdata.models import fused as fused_ops
from perfdata.models import sampling


def merge_sparse(parts: list[tuple[torch.Tensor, torch.Tensor]], n_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum sparse gradients.

    Args:
        parts: list of (rows (k_i,) int64, grad (k_i, C)); rows may repeat within and across parts.
        n_rows: rows in the parameter table.
    Returns:
        rows (m,) distinct sorted, grad (m, C) summed.
    """
    rows_all = torch.cat([r for r, _ in parts])
    grads = torch.cat([g for _, g in parts])
    rows, local = sampling.compact_rows(rows_all, n_rows)
    out = torch.zeros((rows.numel(), grads.shape[1]), dtype=grads.dtype, device=grads.device)
    return rows, out.index_add_(0, local, grads)


class SparseRMSProp:
    """RMSProp over the rows of one parameter table (n_rows, C): v <- beta v + (1 - beta) g^2,
    p <- p - lr g / (sqrt(v) + eps), for the given rows only; other rows and their state are untouched.

    v starts at 0, so the first step moves every row by lr / sqrt(1 - beta) (4.5 lr at beta 0.95), the next ones
    by a little less. `bias_correction` divides v by 1 - beta^t (Adam's correction of its second moment), t the
    number of steps taken: every step then moves a row by at most about lr. One count serves the table, so it is
    exact for rows touched from the first step on; a row first touched later gets less than its own correction.
    """

    def __init__(self, n_rows: int, n_cols: int, beta: float = 0.95, eps: float = 1e-8,
                 device: torch.device | str = "cpu", bias_correction: bool = False) -> None:
        self.beta = beta
        self.eps = eps
        self.sq = torch.zeros((n_rows, n_cols), dtype=torch.float32, device=device)
        self.bias_correction = bias_correction
        self.t = 0
        """Steps taken (step_ and step_dense_ calls)."""

    def _lr(self, lr: float) -> float:
        """The step's learning rate: lr, times sqrt(1 - beta^t) with bias_correction (the same as dividing v by
        1 - beta^t, up to eps)."""
        self.t += 1
        return lr * math.sqrt(1.0 - self.beta ** self.t) if self.bias_correction else lr

    def step_(self, param: torch.Tensor, rows: torch.Tensor, grad: torch.Tensor, lr: float, fused: bool = True) -> None:
        """Update `param` (n_rows, C) in place at `rows` (m,) distinct, with `grad` (m, C); with `fused`, in one
        kernel pass where the fused kernels run (`perfdata.models.fused`), else with the torch ops below."""
        assert grad.shape == (rows.numel(), param.shape[1]), f"grad must be ({rows.numel()}, {param.shape[1]})"
        lr = self._lr(lr)
        if rows.numel() == 0:
            return
        if fused and param.is_contiguous() and param.dtype == torch.float32 and fused_ops.available(param.device):
            fused_ops.rmsprop_step_(param, self.sq, rows, grad.float(), self.beta, self.eps, lr)
            return
        sq = self.sq.index_select(0, rows).mul_(self.beta).addcmul_(grad, grad, value=1.0 - self.beta)
        self.sq.index_copy_(0, rows, sq)
        update = grad / sq.sqrt_().add_(self.eps)
        param.index_add_(0, rows, update, alpha=-lr)

    def step_dense_(self, param: torch.Tensor, grad: torch.Tensor, lr: float) -> None:
        """Update every row of `param` (n_rows, C) in place from a dense `grad` (n_rows, C); rows whose
        gradient is exactly zero keep their value and state (as in `step_`)."""
        assert grad.shape == param.shape == self.sq.shape, "dense grad must match the parameter table"
        lr = self._lr(lr)
        touched = (grad != 0).any(-1, keepdim=True)
        new_sq = torch.where(touched, self.sq * self.beta + (1.0 - self.beta) * grad * grad, self.sq)
        self.sq = new_sq
        param.addcdiv_(grad, new_sq.sqrt().add_(self.eps), value=-lr)


class SparseAdam:
    """Adam over the rows of one parameter table (n_rows, C), updating only the given rows (lazily, like
    torch.optim.SparseAdam; no bias correction): m <- b1 m + (1 - b1) g, v <- b2 v + (1 - b2) g^2,
    p <- p - lr m / (sqrt(v) + eps). Its momentum averages noisy gradients (semantic logits under label noise:
    `perfdata.pipelines.semantic_fit`)."""

    def __init__(self, n_rows: int, n_cols: int, betas: tuple[float, float] = (0.9, 0.99), eps: float = 1e-8,
                 device: torch.device | str = "cpu") -> None:
        self.betas, self.eps = betas, eps
        self.m = torch.zeros((n_rows, n_cols), dtype=torch.float32, device=device)
        self.v = torch.zeros((n_rows, n_cols), dtype=torch.float32, device=device)

    def step_(self, param: torch.Tensor, rows: torch.Tensor, grad: torch.Tensor, lr: float) -> None:
        """Update `param` (n_rows, C) in place at `rows` (m,) distinct, with `grad` (m, C)."""
        assert grad.shape == (rows.numel(), param.shape[1]), f"grad must be ({rows.numel()}, {param.shape[1]})"
        if rows.numel() == 0:
            return
        b1, b2 = self.betas
        m = self.m.index_select(0, rows).mul_(b1).add_(grad, alpha=1.0 - b1)
        v = self.v.index_select(0, rows).mul_(b2).addcmul_(grad, grad, value=1.0 - b2)
        self.m.index_copy_(0, rows, m)
        self.v.index_copy_(0, rows, v)
        param.index_add_(0, rows, m / v.sqrt().add_(self.eps), alpha=-lr)
