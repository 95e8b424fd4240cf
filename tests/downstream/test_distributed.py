"""Data-parallel training with two real gloo processes: disjoint samples, equal weights after a step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from downstream_data import ddp_worker, teardown_worker
from perfdata.downstream.distributed import DistInfo, dist_from_env, launch
from perfdata.downstream.train import build_model

from perfdata.errors import ConfigError


def test_two_gloo_processes_split_samples_and_agree_on_weights(shard_dir: Path, tmp_path: Path) -> None:
    assert launch(2, ddp_worker, (str(shard_dir), str(tmp_path))) == 0
    s0, s1 = (json.loads((tmp_path / f"keys{r}.json").read_text()) for r in (0, 1))
    assert len(s0) == len(s1) > 1  # the same number of steps on both ranks
    k0, k1 = sum(s0, []), sum(s1, [])
    assert not set(k0) & set(k1)  # disjoint samples
    assert len(set(k0)) == len(k0) and all(k.startswith("obj_") for k in k0 + k1)
    w0, w1 = (torch.load(tmp_path / f"w{r}.pt", weights_only=True) for r in (0, 1))
    torch.manual_seed(0)  # the run seeds its model init with cfg.seed
    init = build_model("cls2d", 3, 3, (4, 8))
    assert set(w0) == {k for k, _ in init.named_parameters()}
    for name, v in w0.items():
        assert torch.equal(v, w1[name]), name  # gradients were averaged over the two ranks
    assert any(not torch.equal(w0[k], p.detach()) for k, p in init.named_parameters())  # and a step was taken
    metrics = json.loads((tmp_path / "train" / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["epochs"][0]["n_samples"] == len(k0) + len(k1)


def test_no_rank_leaves_the_group_before_the_others_are_done(tmp_path: Path) -> None:
    assert launch(2, teardown_worker, (str(tmp_path),)) == 0
    slow_done = float((tmp_path / "slow_done").read_text())
    assert float((tmp_path / "left1").read_text()) >= slow_done  # rank 1 waited for rank 0 at teardown


def test_env_parsing() -> None:
    assert dist_from_env({}) == DistInfo(0, 1, 0)
    assert dist_from_env({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}).enabled
    with pytest.raises(ConfigError, match="RANK 4 is not in"):
        dist_from_env({"RANK": "4", "WORLD_SIZE": "4"})
