"""Shared fixtures."""
import pytest

from repro import data


@pytest.fixture(scope="session")
def data_available():
    """Skip (with the loader's own message) when the datasets the smoke pipeline needs are absent."""
    try:
        for name, split in (("tinyimagenet32", "train"), ("tinyimagenet32", "val"), ("cifar10", "train"), ("cifar10", "test")):
            data.load(name, split)
    except FileNotFoundError as e:
        pytest.skip(f"data not available (set REPRO_DATA_DIR): {e}")
