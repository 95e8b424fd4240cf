"""benchmarks/scale.py --quick as a smoke run (~20 s on 2 idle cores): one JSON object with the issue's keys.
The figures of a quick run mean nothing, so only their presence and sanity are checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "scale.py"


@pytest.mark.slow
def test_scale_benchmark_quick_prints_one_json_object(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--work", str(tmp_path / "work")],
                          capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    for key in ("fit.speedup_2_workers", "render.speedup_2_workers", "overhead_ms_per_task"):
        assert isinstance(result[key], float) and result[key] > 0, (key, result)
    for stage in ("fit", "render"):
        assert result[f"{stage}.seconds_1_worker"] > 0 and result[f"{stage}.seconds_2_workers"] > 0
    assert result["quick"] is True and result["targets"]["fit.speedup_2_workers"]["target"] == 1.6
