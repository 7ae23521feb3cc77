"""The one approach vocabulary, and every run parameter reaching the sampler and the prior it claims to set."""
import dataclasses
import math

import pytest
import torch

from repro.experiments.spec import RunSpec
from repro.experiments import approaches, segmentation, transfer
from repro.experiments.pretrain import load_source_model
from repro.method.priors import ComposedPrior, IsotropicGaussianPrior, LowRankGaussianPrior, Widened
from repro.method.samplers import SGHMC, SGLD
from repro.profiles import get_profile

P = get_profile("smoke")


@pytest.fixture(autouse=True)
def smoke_priors(smoke_priors_dir, monkeypatch):
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(smoke_priors_dir))


def test_one_vocabulary_for_both_tasks():
    for name in approaches.TASKS["segmentation"].approaches:
        t, s = approaches.lookup(name, "transfer"), approaches.lookup(name, "segmentation")
        assert (t.prior, t.inference) == (s.prior, s.inference) and s.init == "pretrained"
    assert approaches.lookup("bayes_nonlearned").init == "random"       # transfer starts (4) from scratch
    assert {a.inference for a in approaches.APPROACHES.values()} == {"map", "sampler", "variational"}
    with pytest.raises(ValueError, match="unknown task 'detection'"):
        approaches.lookup("map_learned", "detection")


@pytest.mark.parametrize("temperature", [float("nan"), float("inf"), -0.5, "1"])
def test_one_temperature_rule(temperature):
    with pytest.raises(ValueError, match="temperature must be a finite number >= 0|temperature must be a float"):
        RunSpec.default(P, "transfer", "bayes_learned", temperature=temperature)
    with pytest.raises(ValueError, match="temperature must be a finite number >= 0"):
        SGHMC([torch.nn.Parameter(torch.zeros(2))], lr=0.1, num_data=10, temperature=temperature)


def test_map_is_an_explicit_inference_at_temperature_zero():
    p = RunSpec.default(P, "transfer", "map_learned")
    assert p.temperature == 0.0 and p.sampler == "sgd"
    with pytest.raises(ValueError, match=r"runs no sampler: its temperature is 0, got 0.5"):
        dataclasses.replace(p, temperature=0.5)
    vi = RunSpec.default(P, "transfer", "vi_learned")
    assert vi.temperature == 0.0 and vi.sampler == "de_elbo" and approaches.regime_of("vi_learned", 0.0) == "map"
    with pytest.raises(ValueError, match="takes sampler de_elbo or elbo, got 'sghmc'"):
        dataclasses.replace(vi, sampler="sghmc")


def test_each_run_belongs_to_one_temperature_regime():
    import pandas as pd

    df = pd.DataFrame({"approach": ["map_learned", "bayes_learned", "bayes_learned", "bayes_nonlearned", "sgd_transfer"],
                       "temperature": [0.0, 1.0, 1e-2, 0.0, 0.0]})
    assert list(approaches.with_regime(df).regime) == ["map", "T1", "cold", "cold", "map"]
    assert list(approaches.with_regime(df).arm) == ["map_learned", "bayes_learned (T1)", "bayes_learned (cold)",
                                                   "bayes_nonlearned (cold)", "sgd_transfer"]
    cold = approaches.in_regime(df, "cold")
    assert list(cold.approach) == ["map_learned", "bayes_learned", "bayes_nonlearned", "sgd_transfer"]
    assert list(approaches.in_regime(df, "T1").temperature) == [0.0, 1.0, 0.0]
    assert approaches.ARM_LABELS["bayes_learned (cold)"] == "(1) Bayes + learned, cold T"
    with pytest.raises(ValueError, match="unknown temperature regime 'hot'"):
        approaches.in_regime(df, "hot")


def test_a_sampler_keeps_its_first_cycle_out_of_the_bma_by_default():
    assert RunSpec.default(P, "transfer", "bayes_learned").burnin_cycles == 1
    assert RunSpec.default(P, "transfer", "bayes_learned", cycles=1).burnin_cycles == 0
    assert RunSpec.default(P, "transfer", "map_learned").burnin_cycles == 0
    with pytest.raises(ValueError, match="burnin_cycles must be in 0..cycles - 1 = 2, got 3"):
        RunSpec.default(P, "transfer", "bayes_learned", burnin_cycles=3)


def test_steps_follow_the_budget_of_the_training_set_size():
    cpu = get_profile("cpu", downstream_steps=((100, 400), (1000, 1600), (5000, 3200)))
    assert [RunSpec.default(cpu, "transfer", "sgd_transfer", n_train=n).steps
            for n in (100, 300, 1000, 5000)] == [400, 1600, 1600, 3200]
    assert RunSpec.default(cpu, "transfer", "sgd_transfer", n_train=300, steps=7).steps == 7
    assert RunSpec.default(cpu, "segmentation", "sgd_transfer").steps == cpu.segmentation_steps


def test_only_transfer_sampler_runs_reestimate_batchnorm_and_only_where_notebook_09_adopted_it():
    on, off = get_profile("smoke", bn_refresh=True), get_profile("smoke", bn_refresh=False)
    refresh = {(task, a): RunSpec.default(on, task, a).bn_refresh
               for task, a in (("transfer", "bayes_learned"), ("transfer", "bayes_nonlearned"), ("transfer", "map_learned"),
                               ("transfer", "vi_learned"), ("segmentation", "bayes_learned"))}
    assert refresh == {("transfer", "bayes_learned"): True, ("transfer", "bayes_nonlearned"): True,
                       ("transfer", "map_learned"): False, ("transfer", "vi_learned"): False,
                       ("segmentation", "bayes_learned"): False}
    assert not RunSpec.default(off, "transfer", "bayes_learned").bn_refresh


class Held:
    """What the optimiser of a run holds at its first step (the step itself is replaced: nothing trains)."""

    def __init__(self, monkeypatch):
        self.seen: list[dict] = []

        def sghmc_step(opt, closure=None):
            g = opt.param_groups[0]
            self.seen.append(dict(kind=type(opt).__name__, temperature=g["temperature"], lr0=g["lr"],
                                  jitter=getattr(opt, "jitter", None),
                                  momentum=g["momentum"], prior=opt.prior))
            opt.log_prior = torch.zeros(())                          # what a real step would leave for the run's check

        def sgd_step(opt, closure=None):
            g = opt.param_groups[0]
            self.seen.append(dict(kind="SGD", weight_decay=g["weight_decay"], momentum=g["momentum"], prior=None))

        for cls in (SGHMC, SGLD):       # each class: torch wraps a subclass's inherited step at its first instance
            monkeypatch.setattr(cls, "step", sghmc_step)
        monkeypatch.setattr(torch.optim.SGD, "step", sgd_step)


# Values unlike any default, so that a parameter silently replaced by another value cannot pass.
ODD = dict(temperature=0.37, scale=123.0, rank=3, alpha=0.0456, head_var=0.789, weight_decay=3.3e-4, momentum=0.8,
           lr=0.021)


def check_prior(prior, a, p, backbone_mean):
    if a.prior == "weight_decay":
        assert prior is None
        return
    if a.prior == "isotropic":
        assert isinstance(prior, IsotropicGaussianPrior) and prior.variance == p.alpha and prior.mean is None
        return
    assert isinstance(prior, ComposedPrior)
    body, head = prior.parts
    assert isinstance(head, IsotropicGaussianPrior) and head.variance == p.head_var and head.mean is None
    if a.prior == "learned":
        assert isinstance(body, LowRankGaussianPrior) and (body.scale, body.rank) == (p.scale, p.rank)
        assert torch.equal(body.mean, backbone_mean)
    else:
        assert isinstance(body, IsotropicGaussianPrior) and body.variance == p.alpha
        assert torch.equal(body.mean, backbone_mean)


@pytest.mark.parametrize("task, name", [("transfer", n) for n in approaches.APPROACHES]
                         + [("segmentation", n) for n in approaches.TASKS["segmentation"].approaches])
def test_every_parameter_reaches_the_sampler_and_the_prior(monkeypatch, task, name):
    a = approaches.lookup(name, task)
    odd = ODD if a.bayes else {k: v for k, v in ODD.items() if k != "temperature"}
    p = RunSpec.default(P, task, name, steps=2, cycles=1, bma_samples=1, **odd)   # transfer: SGHMC, seg.: SGLD
    if p.sampler == "sghmc":
        p = dataclasses.replace(p, sampler_version=2)          # the version without resonance: its jitter reaches SGHMC
    held = Held(monkeypatch)
    (transfer.run_transfer if task == "transfer" else segmentation.run_segmentation)(P, p)
    first = held.seen[0]
    assert first["momentum"] == (0.0 if first["kind"] == "SGLD" else p.momentum)
    if a.prior == "weight_decay":
        assert first["kind"] == "SGD" and first["weight_decay"] == p.weight_decay
    else:
        kinds = {"sgld": "SGLD", "sghmc": "SGHMC", "sgd": "SGHMC", "de_elbo": "DataEmphasizedVI"}
        assert first["kind"] == kinds[p.sampler]
        assert (first["jitter"] == 0.5) == (p.sampler == "sghmc")
        assert first["temperature"] == p.temperature == (ODD["temperature"] if a.bayes else 0.0)
        assert math.isclose(first["lr0"], p.lr)                   # the cyclical schedule starts at the run's lr
    mean = None
    if a.init == "pretrained" and a.prior != "isotropic":
        mean = torch.cat([q.detach().reshape(-1) for q in load_source_model(P, p.prior_kind).backbone.parameters()])
    if a.inference == "variational":   # the prior's blocks at unit width, their widths learned: rank and kind still set
        blocks = first["prior"].parts
        assert all(isinstance(b, Widened) for b in blocks)
        check_prior(ComposedPrior([b.base for b in blocks]) if len(blocks) > 1 else blocks[0].base, a,
                    dataclasses.replace(p, scale=1.0, alpha=1.0, head_var=1.0), mean)
        assert a.prior != "learned" or blocks[0].base.eps == 0.0
    else:
        check_prior(first["prior"], a, p, mean)
