"""Root pytest configuration: under pytest-xdist (``make test``), every notebook cell runs in one worker, in order.

The notebooks build on each other's results on the smoke profile (notebook 01's priors, notebook 09's budgets), and
nbval's cells share one kernel per notebook, so they are one ``xdist_group``; ``--dist loadgroup`` keeps a group's
tests together and in collection order, while the unit tests are spread over the other workers.
"""
import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.xdist_group("notebooks"))
