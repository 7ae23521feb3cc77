"""Shared fixtures."""
import pytest

from repro import data
from repro.profiles import get_profile

SMOKE = get_profile("smoke")


@pytest.fixture(scope="session")
def data_available():
    """Skip (with the loader's own message) when the datasets the smoke pipeline needs are absent."""
    try:
        for name, split in (("tinyimagenet32", "train"), ("tinyimagenet32", "val"), ("cifar10", "train"), ("cifar10", "test")):
            data.load(name, split)
    except FileNotFoundError as e:
        pytest.skip(f"data not available (set REPRO_DATA_DIR): {e}")


@pytest.fixture(scope="session")
def smoke_priors_dir(tmp_path_factory, data_available):
    """A results folder with the smoke profile's priors (about 10 s, built once per session)."""
    from repro.experiments import pretrain

    folder = tmp_path_factory.mktemp("results")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REPRO_RESULTS_DIR", str(folder))
        for kind in ("supervised", "ssl"):
            pretrain.prepare(SMOKE, kind)
        pretrain.prepare(SMOKE, pretrain.MATCHED, from_epoch=1)
    return folder
