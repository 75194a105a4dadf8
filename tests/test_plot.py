"""Learning-curve maths and scripts/plot.py, on hand-made run folders."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mappo.plot import curve, final_return, mean_std, read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_run(path, returns, steps_per_iter=100, eval_mean=None):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "metrics.jsonl"), "w") as f:
        for i, r in enumerate(returns):
            row = {"iteration": i + 1, "env_steps": (i + 1) * steps_per_iter}
            if r is not None:
                row["team_return"] = r
            f.write(json.dumps(row) + "\n")
        f.write('{"iteration": 99, "env_st')  # a line cut short by a crash is skipped
    if eval_mean is not None:
        with open(os.path.join(path, "eval.json"), "w") as f:
            json.dump({"team_return_mean": eval_mean}, f)
    return str(path)


def test_curve_skips_missing_values_and_smooths(tmp_path):
    rows = read_metrics(make_run(tmp_path / "a", [1.0, None, 3.0, 5.0, 7.0]))
    assert len(rows) == 5
    x, y = curve(rows)
    assert x.tolist() == [100, 300, 400, 500] and y.tolist() == [1.0, 3.0, 5.0, 7.0]
    _, smoothed = curve(rows, smooth=2)
    assert smoothed.tolist() == [1.0, 2.0, 4.0, 6.0]  # trailing mean of up to 2 points


def test_mean_std_over_the_common_range():
    a = (np.array([0.0, 10.0]), np.array([0.0, 10.0]))
    b = (np.array([0.0, 5.0, 20.0]), np.array([2.0, 2.0, 2.0]))
    x, mean, std = mean_std([a, b], points=3)
    assert x.tolist() == [0.0, 5.0, 10.0]  # only where both runs have data
    assert mean.tolist() == [1.0, 3.5, 6.0]
    assert std.tolist() == [1.0, 1.5, 4.0]


def test_final_return_prefers_eval_json(tmp_path):
    assert final_return(make_run(tmp_path / "a", [0.0] * 18 + [5.0, 7.0])) == 6.0  # last 10% of 20
    assert final_return(make_run(tmp_path / "b", [0.0] * 20, eval_mean=-3.5)) == -3.5
    with pytest.raises(FileNotFoundError, match="no metrics.jsonl"):
        read_metrics(str(tmp_path))


def test_plot_script_writes_png_and_prints_table(tmp_path):
    for seed, shift in enumerate((0.0, 2.0)):
        make_run(tmp_path / "m" / f"seed{seed}", list(np.linspace(-80, -50, 30) + shift), eval_mean=-50 + shift)
    make_run(tmp_path / "i" / "seed0", list(np.linspace(-80, -60, 30)))
    out = tmp_path / "fig" / "c.png"
    result = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "plot.py"), f"MAPPO={tmp_path}/m/seed*",
                             f"IPPO={tmp_path}/i/seed*", "--out", str(out), "--title", "test"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    assert "MAPPO" in result.stdout and "-49.00 +- 1.00" in result.stdout
    bad = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "plot.py"), str(tmp_path / "nothing*")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "no run folders" in bad.stderr
