"""A long downstream run says how far it is: step, loss and elapsed time through logging, every 10 % of its steps."""
import logging

import torch
from torch import nn

from repro.experiments.spec import RunSpec
from repro.experiments import approaches, transfer
from repro.profiles import get_profile


def test_progress_steps_are_every_tenth_and_end_with_the_last():
    assert transfer.progress_steps(100) == {10, 20, 30, 40, 50, 60, 70, 80, 90, 100}
    assert transfer.progress_steps(25) == {3, 5, 8, 10, 13, 15, 18, 20, 23, 25}
    assert transfer.progress_steps(4) == {1, 2, 3, 4} and transfer.progress_steps(0) == set()


def test_a_run_logs_its_progress_ten_times(caplog):
    torch.manual_seed(0)
    p = RunSpec.default(get_profile("smoke"), "transfer", "sgd_transfer", steps=50, batch_size=8)
    x, y = torch.randn(40, 6), torch.randint(0, 3, (40,))
    with caplog.at_level(logging.INFO, logger="repro.experiments.transfer"):
        transfer.fit_or_sample(nn.Linear(6, 3), None, approaches.lookup("sgd_transfer"), p, x, y, None,
                               nn.functional.cross_entropy)
    lines = [r.getMessage() for r in caplog.records if r.name == "repro.experiments.transfer"]
    assert len(lines) == 10 and lines[0].startswith("sgd_transfer seed 0: step 5/50 (10 %), loss ")
    assert lines[-1].startswith("sgd_transfer seed 0: step 50/50 (100 %)") and lines[-1].endswith("s elapsed")
