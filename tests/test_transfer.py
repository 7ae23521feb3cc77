"""Downstream runs on the smoke profile: determinism, divergence handling in a grid, and input errors."""
import dataclasses
import math

import pytest
import torch

from repro.experiments.spec import RunSpec
from repro.experiments import approaches, evaluations, grid, transfer
from repro.profiles import get_profile
from repro.runner import load_results, run_grid
from repro.train import DivergenceError

P = get_profile("smoke")


@pytest.fixture(scope="module", autouse=True)
def smoke_priors(smoke_priors_dir):
    """Every test here reads the smoke priors of the session's results folder."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REPRO_RESULTS_DIR", str(smoke_priors_dir))
        yield smoke_priors_dir


def params(approach="bayes_learned", **kw):
    return RunSpec.default(P, "transfer", approach, scale=1e6, steps=6, **kw)


def test_same_seed_gives_bit_identical_results():
    a, b = (transfer.run_transfer(P, params()) for _ in range(2))
    assert all(a[k] == b[k] for k in ("accuracy", "nll", "ece"))
    assert torch.equal(a["predictions"]["probs"], b["predictions"]["probs"])
    c = transfer.run_transfer(P, params(seed=1))
    assert not torch.equal(a["predictions"]["probs"], c["predictions"]["probs"])


@pytest.mark.parametrize("approach", sorted(approaches.APPROACHES))
def test_every_approach_runs_and_reports_probabilities(approach):
    out = transfer.run_transfer(P, params(approach))
    probs = out["predictions"]["probs"].float()
    assert probs.shape == (P.downstream_test_n, 10)
    assert torch.allclose(probs.sum(1), torch.ones(len(probs)), atol=1e-2)
    assert 0 <= out["accuracy"] <= 1 and math.isfinite(out["nll"])
    assert out["samples_collected"] == (P.bma_samples if approaches.APPROACHES[approach].bayes else 1)


def test_holdout_is_fixed_and_outside_every_training_subset():
    held = None
    for n, seed in ((100, 0), (100, 1), (300, 0)):
        tr, ev = transfer.downstream_indices(P, "cifar10", n, seed, "holdout", P.val_fraction)
        assert len(tr) == n and len(ev) == P.downstream_test_n and not torch.isin(tr, ev).any()
        assert held is None or torch.equal(ev, held)             # one set for every size and seed
        held = ev
    # val and test subsets are the ones the first protocol used: the holdout does not move them
    tr, _ = transfer.downstream_indices(P, "cifar10", 100, 0, "test", P.val_fraction)
    assert torch.equal(tr, transfer.data.stratified_subset(transfer.data.load("cifar10", "train").targets, 100, seed=0))


def test_sampler_run_reports_each_sample_by_cycle_and_both_bn_variants():
    p = params(bn_refresh=True, split="holdout")
    out = transfer.run_transfer(P, p)
    accs, cycles = out["sample_accuracy"].split(";"), [int(c) for c in out["sample_cycle"].split(";")]
    assert len(accs) == len(cycles) == out["samples_collected"] == P.bma_samples
    assert min(cycles) == p.burnin_cycles == 1 and max(cycles) == p.cycles - 1
    assert all(0 <= float(a) <= 1 for a in accs)
    assert 0 <= out["bn_running_accuracy"] <= 1 and out["bn_running_nll"] != out["nll"]
    assert "sample_accuracy" not in transfer.run_transfer(P, params("map_learned"))
    assert "bn_running_accuracy" not in transfer.run_transfer(P, params(bn_refresh=True))   # notebook 09's data only


@pytest.mark.parametrize("bn_refresh", [False, True])
def test_the_shifted_set_is_scored_by_the_same_samples_as_the_test_set(monkeypatch, bn_refresh):
    # with the test images, shuffled, as the "shifted" set, the one-pass evaluation must give each of them its test
    # probabilities exactly: the same samples, the same BatchNorm statistics, the right rows
    p = params(bn_refresh=bn_refresh)
    _, _, ex, ey = transfer.downstream_data(P, "cifar10", p.n_train, p.seed, "test", P.val_fraction)
    perm = torch.randperm(len(ex), generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(evaluations, "_shift_set",
                        lambda profile: evaluations.ShiftSet("shuffled", ex[perm], ey[perm], -torch.ones_like(ey)))
    out = transfer.run_transfer(P, p)
    pred = out["predictions"]
    assert torch.equal(pred["shift_probs"], pred["probs"][perm]) and out["shift_accuracy"] == out["accuracy"]


def test_divergent_run_is_recorded_and_the_grid_goes_on(tmp_path):
    # plain SGD (no prior): with a prior the implicit diagonal step keeps even lr = 1e6 finite
    runs = [grid.as_run(params("sgd_transfer", lr=1e6)), grid.as_run(params("sgd_transfer"))]
    df = run_grid(runs, lambda r: transfer.run_transfer(P, RunSpec.from_record("transfer", r.params)),
                  tmp_path / "grid.csv")
    assert df.status.iloc[0].startswith("failed: DivergenceError:") and df.status.iloc[1] == "ok"
    assert len(load_results(tmp_path / "grid.csv")) == 2
    with pytest.raises(DivergenceError):
        transfer.run_transfer(P, params("sgd_transfer", lr=1e6))


@pytest.mark.parametrize("change, message", [
    (dict(approach="bayes_magic"), "unknown transfer approach 'bayes_magic'; valid: bayes_learned"),
    (dict(dataset="mnist"), "unknown downstream dataset 'mnist'; valid: cifar10, fashion-mnist"),
    (dict(n_train=10**6), r"n_train must be in 1\.\.50000"),
    (dict(temperature=-1.0), "temperature must be a finite number >= 0"),
    (dict(temperature=float("nan")), "temperature must be a finite number >= 0"),
    (dict(scale=0.0), "scale must be a finite number > 0"),
    (dict(approach="map_learned", sampler="sgd"), "approach 'map_learned' runs no sampler: its temperature is 0, got 1.0"),
    (dict(prior_kind="imagenet"), "approach 'bayes_learned' \\(pretrained initialisation\\) takes prior_kind supervised or ssl or supervised_matched, got 'imagenet'"),
    (dict(rank=P.swag_max_rank + 1), rf"rank {P.swag_max_rank + 1} requested but the file stores {P.swag_max_rank}"),
    (dict(split="train"), "a transfer run's split must be one of val, test, holdout, got 'train'"),
    (dict(sampler="adam"), "unknown sampler 'adam'; valid: sgd, sgld, sghmc, de_elbo, elbo"),
    (dict(sampler="sgd"), "approach 'bayes_learned' takes sampler sgld or sghmc, got 'sgd'"),
])
def test_bad_run_parameters(change, message):
    with pytest.raises(ValueError, match=message):
        transfer.run_transfer(P, dataclasses.replace(params(), **change))


def test_unknown_parameter_names_are_refused():
    with pytest.raises(ValueError, match=r"unknown transfer run parameter\(s\) \['lambda'\]"):
        RunSpec.default(P, "transfer", "map_learned", **{"lambda": 3.0})


def test_runs_are_keyed_on_the_prior_protocol_and_a_changed_prior_is_refused(tmp_path, monkeypatch):
    """A run records the protocol hash of the prior it starts from: after the prior is refitted under another
    protocol, the same setting has another key (the old row is not read back), and the old run cannot run."""
    import shutil
    from repro.experiments import pretrain
    from repro.profiles import results_dir
    from repro.method.prior_files import save_prior

    results = tmp_path / "results"
    shutil.copytree(results_dir(P) / "priors", results / "smoke" / "priors")
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(results))
    setting = params("map_learned")
    keyed = grid.keyed_on_prior(P, setting)
    assert keyed.prior_protocol == pretrain.prior_protocol(P, "ssl") != pretrain.UNHASHED
    assert "prior_protocol" not in grid.keyed_on_prior(P, params("map_nonlearned", prior_kind="none")).keyed()
    old_run = grid.as_run(keyed)

    path = pretrain.artifacts(P, "ssl").prior                 # refit "under another protocol": same tensors, new hash
    raw = torch.load(path, weights_only=True)
    meta = raw["meta"] | {"protocol_hash": "0123456789ab"}
    save_prior(path, raw["mean"], raw["diag"], raw["factor"], layout=list(zip(raw["names"], raw["shapes"])), meta=meta)
    new_run = grid.as_run(grid.keyed_on_prior(P, setting))
    assert new_run.key != old_run.key and new_run["prior_protocol"] == "0123456789ab"
    with pytest.raises(ValueError, match="keyed on .* not re-run with this one"):
        transfer.run_transfer(P, keyed)
    # a prior from before protocol hashes keys its runs as they were recorded: without prior_protocol
    del meta["protocol_hash"]
    save_prior(path, raw["mean"], raw["diag"], raw["factor"], layout=list(zip(raw["names"], raw["shapes"])), meta=meta)
    assert pretrain.prior_protocol(P, "ssl") == pretrain.UNHASHED
    assert grid.keyed_on_prior(P, setting) == setting and setting.prior_protocol is None
    assert grid.as_run(grid.keyed_on_prior(P, setting)).key not in (old_run.key, new_run.key)


def test_evaluation_matches_a_plain_reference_evaluation(monkeypatch):
    """The one-pass evaluation (BatchNorm refreshed per sample, folded, channels-last; the C2 displacement measured
    on each sample as it is evaluated) against the evaluation written plainly: each state loaded into the model,
    its BatchNorm statistics re-estimated, the model in eval mode, and the displacement from the loaded state."""
    import copy
    from repro.analysis.metrics import classification_metrics
    from repro.train import flat_params, update_bn

    fits = []
    fit_or_sample = transfer.fit_or_sample
    monkeypatch.setattr(transfer, "fit_or_sample", lambda *a, **k: fits.append((a[0], fit_or_sample(*a, **k))) or fits[-1][1])
    # a val run has no shifted set: the test images only, here
    p = params(bn_refresh=True, split="val")
    out = transfer.run_transfer(P, p)
    (model, fit), = fits
    x, _, ex, ey = transfer.downstream_data(P, "cifar10", p.n_train, p.seed, "val", P.val_fraction)
    bn = transfer.data.augmented(x, transfer.data.train_transform("cifar10", P.image_size), seed=p.seed)
    _, prior = transfer.build_model_and_prior(P, p, 10, approaches.lookup(p.approach))
    learned = prior.parts[0]
    probs, moved, along = 0, 0.0, 0.0
    for state in fit.states:
        net = copy.deepcopy(model)
        net.load_state_dict(state)
        theta = flat_params(net)[:learned.dim].double()
        moved += float((theta - learned.mean.double()).norm()) / len(fit.states)
        along += learned.low_rank_displacement(theta) / len(fit.states)
        update_bn(net, bn)
        with torch.no_grad():
            probs = probs + net.eval()(ex).softmax(1) / len(fit.states)
    reference = classification_metrics(probs, ey)
    assert math.isclose(out["nll"], reference["nll"], rel_tol=1e-5)
    assert abs(out["accuracy"] - reference["accuracy"]) <= 1 / len(ey)                # a near-tie may flip one image
    assert torch.allclose(out["predictions"]["probs"].float(), probs, atol=1e-3)      # stored in float16
    assert math.isclose(out["displacement"], moved, rel_tol=1e-12) and math.isclose(out["low_rank_displacement"], along, rel_tol=1e-9)


@pytest.mark.parametrize("augment", [True, False])
def test_augmentation_is_a_run_parameter_and_off_trains_on_the_stored_images(monkeypatch, augment):
    seen = {}

    def stop(model, prior, a, p, x, y, transform, *args, **kw):
        seen["transform"] = transform
        raise InterruptedError

    monkeypatch.setattr(transfer, "fit_or_sample", stop)
    p = params(augment=augment)
    with pytest.raises(InterruptedError):
        transfer.run_transfer(P, p)
    assert (seen["transform"] is not None) == augment
    assert ("augment" in p.keyed()) == (not augment)               # on: the runs recorded before the switch
    with pytest.raises(ValueError, match="augment=False are measured on transfer runs only"):
        RunSpec.default(P, "segmentation", "sgd_transfer", augment=False)


def test_nothing_trains_a_downstream_run_while_reading_only(monkeypatch):
    """``make test`` executes the notebooks with REPRO_READ_ONLY set: a run that tried to train would fail there."""
    from repro.experiments import transfer

    monkeypatch.setenv(transfer.READ_ONLY, "1")
    with pytest.raises(RuntimeError, match="reading results must not train"):
        transfer.fit_or_sample(None, None, None, None, None, None, None, None)


def test_a_new_sampler_is_its_own_class_and_one_registration(request):
    """A dummy sampler (SGLD under another name), defined and registered here and nowhere else: a run names it, is
    checked and trains with it; an unknown name is one line, never a fallback to another sampler."""
    from repro.experiments import algorithms
    from repro.method.samplers import SGLD

    request.addfinalizer(lambda: algorithms.ALGORITHMS.pop("dummy", None))   # the registration ends with the test
    built = []

    @algorithms.register
    class Dummy(algorithms.Algorithm):
        name, inference = "dummy", "sampler"

        def build(self, params, p, num_data, prior, generator):
            built.append(p.sampler)
            return SGLD(params, lr=p.lr, num_data=num_data, temperature=p.temperature, generator=generator, prior=prior)

    out = transfer.run_transfer(P, params(sampler="dummy"))
    assert built == ["dummy"] and out["samples_collected"] == P.bma_samples and math.isfinite(out["nll"])
    assert algorithms.of("sampler") == ("sgld", "sghmc", "dummy")
    with pytest.raises(ValueError, match="^unknown sampler 'nope'; valid: sgd, sgld, sghmc, de_elbo, elbo, dummy$"):
        params(sampler="nope")
    with pytest.raises(ValueError, match="^unknown prior family 'wide'; valid: learned, isotropic, isotropic_mean, "
                                         "weight_decay$"):
        approaches.Approach("wide", "pretrained", "map")
