"""The C8 shift set: corruptions checked against their definitions, CIFAR-10.1 picked up when present."""
import numpy as np
import pytest
import torch

from repro import data
from repro.data import shift
from repro.profiles import get_profile

SMOKE = get_profile("smoke")


def grey(n=4, value=128, size=32):
    return torch.full((n, 3, size, size), value, dtype=torch.uint8)


def test_gaussian_noise_has_the_cifar10c_standard_deviation():
    out = shift.corrupt(grey(8), "gaussian_noise", 3, seed=0).float() / 255
    assert out.std().item() == pytest.approx(0.08, rel=0.03)                     # sigma at severity 3
    assert torch.equal(out, shift.corrupt(grey(8), "gaussian_noise", 3, seed=0).float() / 255)   # seeded


def test_contrast_scales_deviations_from_the_image_mean():
    x = torch.randint(60, 200, (3, 3, 32, 32), dtype=torch.uint8)
    out = shift.corrupt(x, "contrast", 5).double() / 255
    xf = x.double() / 255
    mean = xf.mean(dim=(1, 2, 3), keepdim=True)
    assert torch.allclose(out, (xf - mean) * 0.15 + mean, atol=0.5 / 255 + 1e-9)   # rounding only


def test_blur_removes_a_checkerboard_and_jpeg_keeps_shape():
    board = ((torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2 * 255).to(torch.uint8).expand(2, 3, 32, 32)
    blurred = shift.corrupt(board.contiguous(), "gaussian_blur", 5).float()
    inner = blurred[..., 4:-4, 4:-4]
    assert board.float().std() > 120 and inner.std() < 0.1 * board.float().std()
    assert abs(inner.mean().item() - 127.5) < 2
    j = shift.corrupt(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8), "jpeg", 5)
    assert j.shape == (2, 3, 32, 32) and j.dtype == torch.uint8


@pytest.mark.parametrize("corruption, severity, message", [
    ("fog", 1, "unknown corruption 'fog'; valid: gaussian_noise"), ("jpeg", 2, "severity must be one of [1, 3, 5]")])
def test_bad_corruption_names(corruption, severity, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        shift.corrupt(grey(), corruption, severity)


def test_cifar101_is_used_when_its_files_are_present(tmp_path, monkeypatch):
    folder = tmp_path / "cifar10.1"
    folder.mkdir()
    rng = np.random.default_rng(0)
    monkeypatch.setenv("REPRO_DATA_DIR", str(tmp_path))
    np.save(folder / "cifar10.1_v6_data.npy", rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8))
    assert not shift.cifar101_available()              # half of the pair is not enough
    np.save(folder / "cifar10.1_v6_labels.npy", rng.integers(0, 10, 20).astype(np.int64))
    assert shift.cifar101_available()
    data.clear_memory_cache()
    try:
        s = shift.shift_set(SMOKE)
    finally:
        data.clear_memory_cache()
    assert s.name == "cifar10.1" and s.images.shape == (20, 3, 32, 32) and (s.cell == -1).all()


def test_substitute_gives_every_cell_the_same_share_of_every_class(data_available):
    s = shift.shift_set(SMOKE)
    assert s.name == "cifar10-corrupted" and len(s.labels) == 500
    counts = torch.stack([torch.bincount(s.labels[s.cell == i], minlength=10) for i in range(len(shift.CELLS))])
    assert counts.sum(1).max() - counts.sum(1).min() <= 1 and counts.max() - counts.min() <= 2
