import numpy as np
import pytest
import torch

from mappo.normalize import RunningMeanStd


def test_running_mean_std_matches_numpy_over_batches():
    rng = np.random.default_rng(0)
    chunks = [rng.normal(5.0, 3.0, size=n) for n in (7, 100, 1, 33)]
    rms = RunningMeanStd(epsilon=0.0)
    for c in chunks:
        rms.update(torch.as_tensor(c, dtype=torch.float32))
    allx = np.concatenate(chunks)
    assert float(rms.mean) == pytest.approx(allx.mean(), rel=1e-5)
    assert float(rms.var) == pytest.approx(allx.var(), rel=1e-4)
    assert float(rms.count) == len(allx)


def test_mask_and_round_trip():
    rms = RunningMeanStd()
    x = torch.tensor([1.0, 3.0, 1000.0])
    rms.update(x, mask=torch.tensor([True, True, False]))
    assert float(rms.mean) == pytest.approx(2.0)
    assert float(rms.var) == pytest.approx(1.0)
    y = torch.tensor([0.0, 2.0, 5.0])
    assert torch.allclose(rms.denormalize(rms.normalize(y)), y, atol=1e-5)
    assert rms.normalize(torch.tensor([3.0])).item() == pytest.approx(1.0, rel=1e-4)


def test_state_dict_round_trip():
    a = RunningMeanStd()
    a.update(torch.arange(10.0))
    b = RunningMeanStd()
    b.load_state_dict(a.state_dict())
    assert float(b.mean) == float(a.mean) and float(b.var) == float(a.var) and float(b.count) == 10
