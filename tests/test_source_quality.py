"""The source-side checks: the stationarity rule, the lr fallback, the quality-matched epoch (hand-made tables)."""
import pandas as pd
import pytest

from repro.experiments import pretrain, source_quality
from repro.profiles import get_profile


def _evaluation(kind, checkpoint, swa, n=100):
    """An evaluate_source table: the same accuracy on the source metric and the CIFAR-10 probe."""
    metric = "source_acc" if kind == "supervised" else "probe_source_acc"
    rows = [{"kind": kind, "state": s, metric: a, "probe_cifar10_acc": a}
            for s, a in (("pretrained", checkpoint), ("swa_mean", swa), ("swag_sample_0", swa), ("swag_sample_1", swa))]
    return pd.DataFrame(rows).assign(n_source_val=n, n_cifar10_test=n)


@pytest.mark.parametrize("kind", ["supervised", "ssl"])
@pytest.mark.parametrize("swa, ok", [(0.50, True), (0.55, True), (0.46, True), (0.44, False)])
def test_swa_check_allows_one_binomial_standard_error(kind, swa, ok):
    # checkpoint 0.5 on 100 images: SE = sqrt(0.25 / 100) = 0.05
    check = source_quality.swa_check(_evaluation(kind, 0.5, swa)).iloc[0]
    assert check.swa_ok == ok and check.source_tolerance == pytest.approx(0.05)
    assert check.source_metric == ("source_acc" if kind == "supervised" else "probe_source_acc")


def test_fit_stationary_steps_the_lr_down_until_the_check_passes(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path))
    profile = get_profile("smoke")
    swa_at = {0.01: 0.30, 0.003: 0.48, 0.001: 0.49}          # checkpoint 0.5, n = 100: 0.30 fails, 0.48 passes
    fitted = []

    def prepare(profile_, kind, from_epoch=None, swag_lr=None):
        out = pretrain.artifacts(profile_, kind)
        if swag_lr is None:                                   # the check of an existing prior: nothing to fit
            assert out.prior.exists()
            return out
        assert not out.prior.exists()                         # a failed attempt was deleted before the refit
        out.prior.parent.mkdir(parents=True, exist_ok=True)
        out.prior.write_text(str(swag_lr)), out.swa.write_text(str(swag_lr))
        fitted.append(swag_lr)
        return out

    monkeypatch.setattr(pretrain, "prepare", prepare)
    monkeypatch.setattr(source_quality, "unusable", lambda path: None)   # the stand-in priors below are text files
    monkeypatch.setattr(source_quality, "evaluate_source",
                        lambda p, kind: _evaluation(kind, 0.5, swa_at[float(pretrain.artifacts(p, kind).prior.read_text())]))
    attempts = source_quality.fit_stationary(profile, "supervised")
    assert fitted == [0.01, 0.003] and attempts.swag_lr.tolist() == [0.01, 0.003]
    assert attempts.swa_ok.tolist() == [False, True]
    assert pretrain.artifacts(profile, "supervised").prior.read_text() == "0.003"
    # an existing prior is kept; the log is read back
    again = source_quality.fit_stationary(profile, "supervised")
    assert fitted == [0.01, 0.003] and again.swag_lr.tolist() == [0.01, 0.003]
    # when every lr fails, the last is kept and reported
    swa_at.update({0.003: 0.2, 0.001: 0.2})
    attempts = source_quality.fit_stationary(profile, "ssl")
    assert attempts.swag_lr.tolist() == [0.01, 0.003, 0.001] and not attempts.swa_ok.any()
    assert pretrain.artifacts(profile, "ssl").prior.exists()


def test_matched_epoch_is_the_closest_cifar_probe():
    probes = pd.DataFrame([
        {"kind": "ssl", "epoch": 1, "probe_cifar10_acc": 0.40}, {"kind": "ssl", "epoch": 2, "probe_cifar10_acc": 0.55},
        {"kind": "supervised", "epoch": 1, "probe_cifar10_acc": 0.50},
        {"kind": "supervised", "epoch": 2, "probe_cifar10_acc": 0.56},   # |0.01|: closest to the final SSL's 0.55
        {"kind": "supervised", "epoch": 3, "probe_cifar10_acc": 0.64}])
    assert source_quality.matched_epoch(probes) == 2
    tie = probes.assign(probe_cifar10_acc=[0.40, 0.55, 0.50, 0.54, 0.56])
    assert source_quality.matched_epoch(tie) == 3                        # ties: the later (more trained) epoch
    with pytest.raises(ValueError, match="both the 'ssl' and the 'supervised'"):
        source_quality.matched_epoch(probes[probes.kind == "ssl"])


def test_notebook_01_tables_are_read_back_while_the_priors_are_unchanged(tmp_path, monkeypatch):
    """A re-run on finished priors computes nothing and rewrites the table byte for byte; a refitted prior's rows are
    computed again, the other kind's stay as they were."""
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path))
    profile = get_profile("smoke")
    protocols = {"supervised": "0123456789ab", "ssl": "000000000042"}   # an all-digit hash must stay text
    monkeypatch.setattr(pretrain, "prior_protocol", lambda p, kind: protocols[kind])
    computed = []

    def evaluate(p, kind, run=[0]):      # every computation gives new last digits (another thread count)
        computed.append(kind)
        run[0] += 1
        return _evaluation(kind, 0.5 + 1e-9 * run[0], 1 / 3)
    monkeypatch.setattr(source_quality, "evaluate_source", evaluate)
    first = source_quality.source_evaluation(profile, ["supervised", "ssl"])
    path = tmp_path / "smoke" / "prior_fitting" / "source_evaluation.csv"
    committed = path.read_bytes()
    assert computed == ["supervised", "ssl"] and set(first.prior_protocol) == set(protocols.values())

    again = source_quality.source_evaluation(profile, ["supervised", "ssl"])
    assert computed == ["supervised", "ssl"] and path.read_bytes() == committed        # nothing re-computed
    pd.testing.assert_frame_equal(again, pd.read_csv(path, dtype={"kind": str, "prior_protocol": str}))
    assert list(source_quality.swa_check(again).swa_ok) == list(source_quality.swa_check(first).swa_ok)

    protocols["ssl"] = "fedcba987654"                                                  # the SSL prior was refitted
    source_quality.source_evaluation(profile, ["supervised", "ssl"])
    assert computed == ["supervised", "ssl", "ssl"]
    lines = path.read_text().splitlines()
    assert lines[:5] == committed.decode().splitlines()[:5] and "fedcba987654" in lines[-1]


def test_notebook_01_outputs_are_the_priors_of_every_kind_and_the_tables(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path))
    names = [p.name for p in source_quality.outputs(get_profile("smoke"))]
    assert names == ["supervised_prior.pt", "ssl_prior.pt", "supervised_matched_prior.pt", "source_evaluation.csv",
                     "swa_check.csv", "snapshot_norms.csv", "swag_spectrum.csv", "probes_by_epoch.csv"]
