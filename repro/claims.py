"""The paper's claims, one registry: each claim's statement, the independent reproduction's finding, the notebook
that tests it, its decision rule and how that rule is checked on simulated results. The report, the papermill batch,
the verdict records and the simulator all loop over :data:`CLAIMS`; adding a claim is one :class:`Claim`, one
notebook, one rule and its tests.

``python -m repro.claims --out results/cpu/claims/simulation.csv`` prints (and writes) how often each rule returns
each verdict word on simulated run tables with a known effect (:mod:`repro.analysis.simulate`).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable, Mapping

import pandas as pd

from .analysis import simulate, verdicts
from .analysis.stats import MARGINS
from .analysis.wording import Verdict
from .experiments import learned_scale


@dataclass(frozen=True)
class Simulation:
    """A rule checked on simulated tables: ``truth(delta)``, the truth table of an effect of ``delta`` (negative: the
    claim reversed; 0: a null); ``rule(rows, outcomes)``, the claim's rule on them; the ``deltas`` the report shows;
    ``val``: the tables include one-seed validation rows (a rule that chooses on validation)."""
    truth: Callable[[float], dict]
    rule: Callable[..., Verdict]
    deltas: tuple[float, ...]
    val: bool = False


def _delta(r: pd.Series, unit: str = " pt", scale: float = 100, digits: int = 1) -> str:
    """A comparison row as "Δ unit (95 % CI low to high)", in the table's units times ``scale``."""
    return (f"{scale * r.mean_diff:+.{digits}f}{unit} ({scale * r.ci_low:+.{digits}f} to "
            f"{scale * r.ci_high:+.{digits}f})")


@dataclass(frozen=True)
class Primary:
    """The one comparison of a claim's test table that REPORT.md's summary row and forest plot show: the row whose
    columns equal ``where`` (a tuple: any of its values; several rows: the least favourable to the claim);
    ``regimes``, where one table holds every regime: per regime the columns that select it (a regime absent from it
    was not tested). ``metric``: what Δ measures (the
    row's ``metric`` where the table has that column), whose equivalence margin (:data:`repro.analysis.stats.MARGINS`) is the forest plot's unit (None: not on it); ``sign``
    +1 where a positive Δ is the claimed direction, -1 where a lower value is (NLL). ``describe``: the cell's text."""
    label: str
    where: dict
    metric: str | None = "accuracy"
    sign: int = 1
    regimes: Mapping[str, Mapping] | None = None
    describe: Callable[[pd.Series], str] = _delta

    @property
    def margin(self) -> float | None:
        return MARGINS[self.metric] if self.metric else None


@dataclass(frozen=True)
class Claim:
    """One claim: its ``id``, the paper's ``statement`` (with where), the Flowers-102 ``reproduction``'s finding,
    the ``notebook`` that tests it, its decision ``rule`` (:mod:`repro.analysis.verdicts`), its ``simulation``
    (None where its rule has no simulated check), and whether the third protocol re-ran it (``rerun``: verdicts at
    each arm's own budget beside the equal-compute ones). ``paper``: the paper's number or statement, short, with where;
    ``primary``: the comparison REPORT.md's summary shows (:class:`Primary`)."""
    id: str
    statement: str
    reproduction: str
    notebook: str
    rule: Callable[..., Verdict]
    simulation: Simulation | None = None
    rerun: bool = False
    paper: str = ""
    primary: Primary | None = None


def _shift(rows: pd.DataFrame, outcomes: dict) -> Verdict:
    return verdicts.shift_verdict(rows, "simulated (the test set)", outcomes)


def _segmentation(rows: pd.DataFrame, outcomes: dict) -> Verdict:
    return verdicts.segmentation_verdict(rows)         # run-level mIoU only


def _ensemble(rows: pd.DataFrame, outcomes: dict) -> Verdict:
    return verdicts.ensemble_verdict(rows[rows.approach == "bayes_learned"], rows[rows.approach == "deep_ensemble"],
                                     outcomes)


_FOUR, _THREE, _TWO = (0.0, 0.03, 0.05, -0.05), (0.0, 0.05, -0.05), (0.0, 0.02, -0.02)
CLAIMS: dict[str, Claim] = {c.id: c for c in (
    Claim("C1", "test loss flatter along top SWAG directions than random filter-normalised ones (Fig 2a)",
          "not tested", "02_loss_geometry", verdicts.c1_verdict,
          paper="Fig 2a: test loss flatter along the top SWAG directions than along random ones",
          primary=Primary("loss rise at t = 0.5, top-5 vs random-10 directions (SSL prior)",
                          {"kind": "ssl", "bn": "reestimated", "t_star": 0.5}, metric=None,
                          describe=lambda r: f"top {r.top_mean:.2f}, random {r.random_mean:.2f}")),
    Claim("C2", "non-diagonal covariance matters; accuracy rises with rank then plateaus (Fig 2b)",
          "no effect of rank 0 to 5 (λ = 1e5)", "03_rank_ablation", verdicts.rank_verdict,
          Simulation(simulate.rank_truth, verdicts.rank_verdict, _FOUR), rerun=True,
          paper="Fig 2b: accuracy rises with the rank, then plateaus",
          primary=Primary("rank 20 − rank 0 (diagonal only), n = 1 000", {"comparison": "rank 20 vs rank 0"})),
    Claim("C3", "prior scale λ has an interior optimum (Fig 2d)",
          "λ = 1 worst; no decline toward a near-flat prior (no interior optimum)", "04_scale_sweep",
          verdicts.scale_verdict, Simulation(simulate.scale_truth, verdicts.scale_verdict, _THREE, val=True), rerun=True,
          paper="Fig 2d: an interior optimum in λ",
          primary=Primary("(1) at the chosen λ − the better end of the grid", {"approach": "bayes_learned"})),
    Claim("C4", "(1) Bayes+learned > (2) SGD+learned > (3) SGD transfer > (4) Bayes+non-learned > (5) SGD+non-learned; "
          "Bayes > MAP under the learned prior (Fig 2c, 3)",
          "learned > non-learned held; Bayes ≈ SGD, SGD ahead at the larger sizes", "05_five_way", verdicts.ordering_verdict,
          Simulation(simulate.ordering_truth, verdicts.ordering_verdict, _TWO), rerun=True,
          paper="Fig 2c, 3: (1) > (2) > (3) > (4) > (5) across sizes; Bayes beats MAP with the learned prior (§4.2)",
          primary=Primary("(1) Bayes − (2) MAP, learned prior, mean over n",
                          {"dataset": "cifar10", "kind": "ssl", "comparison": "(1)>(2)", "n_train": "all"})),
    Claim("C5", "SSL (SimCLR) priors transfer better than supervised (App B.2, Table 1)",
          "not tested directly; its supervised prior did better in its λ sweep (§4.2)", "05_five_way",
          verdicts.ssl_vs_supervised_verdict,
          Simulation(simulate.ssl_truth, verdicts.ssl_vs_supervised_verdict, _TWO),
          paper="App B.2: SSL priors beat supervised ones",
          primary=Primary("SSL − quality-matched supervised prior, (1), mean over n",
                          {"approach": "bayes_learned", "reference": "supervised_matched",
                           "comparison": "ssl > supervised_matched"})),
    Claim("C6", "learned priors most valuable at intermediate data sizes (§4.2)",
          "data efficiency held against the non-learned prior; an interior peak not tested",
          "05_five_way", verdicts.data_efficiency_verdict,
          Simulation(simulate.efficiency_truth, verdicts.data_efficiency_verdict, _THREE), rerun=True,
          paper="§4.2: the learned prior helps most at intermediate n",
          primary=Primary("(1)'s gain over (3) at n = 300 minus the larger of its gains at n = 100 and 1 000",
                          {"reference": "sgd_transfer",
                           "comparison": ("gain(n=300) > gain(n=100)", "gain(n=300) > gain(n=1000)")})),
    Claim("C7", "Bayes+learned best NLL; Bayes+non-learned beats SGD transfer on NLL; SGD transfer miscalibrated "
          "(Fig 4b)", "not tested", "06_calibration", verdicts.calibration_verdict,
          Simulation(simulate.calibration_truth, verdicts.calibration_verdict, (0.0, 0.02, 0.05, -0.05)), rerun=True,
          paper="Fig 4b, §4.2: (1) has the best NLL; (4) beats (3) on NLL; SGD transfer is miscalibrated",
          primary=Primary("NLL of (1) − (3), mean over n", {"comparison": "(1) vs (3)", "n_train": "all"},
                          metric="nll", sign=-1, describe=lambda r: _delta(r, " nats", 1, 2))),
    Claim("C8", "advantage holds under distribution shift, CIFAR-10.1 (Fig 4a)", "not tested", "07_ood_shift",
          verdicts.shift_verdict, Simulation(simulate.shift_truth, _shift, (0.0, 0.01, 0.02, -0.02)), rerun=True,
          paper="Fig 4a: (1) beats SGD transfer and the non-learned priors on CIFAR-10.1 at every n",
          primary=Primary("(1) − (3) on the shifted test set, mean over n",
                          {"comparison": "(1) vs (3)", "n_train": "all"}, "shift_accuracy")),
    Claim("C9", "segmentation: learned prior + SGLD beats SGD transfer and non-learned prior in mIoU (Table 1)",
          "not tested", "08_segmentation", verdicts.segmentation_verdict,
          Simulation(simulate.segmentation_truth, _segmentation, _FOUR),
          paper="Table 1: SGLD + SSL prior 74.15 vs SGD transfer 73.17 mIoU (VOC); 76.52 vs 73.17 (Cityscapes)",
          primary=Primary("SGLD + SSL prior − SGD transfer, mIoU", {"comparison": "SGLD + ssl learned > sgd_transfer"},
                          "miou")),
    Claim("C10", "BMA of 10 samples beats a deep ensemble of 10 SGD-transfer models (App B.3)", "not tested",
          "05_five_way", verdicts.c10_verdict, Simulation(simulate.ensemble_truth, _ensemble, _FOUR), rerun=True,
          paper="App B.3: the BMA of 10 samples strongly beats a 10-member deep ensemble",
          primary=Primary("BMA − deep ensemble of 10 (n = 1 000)", {"ensemble": "paper"})),
    Claim("E1", "*extension, not the paper's:* the prior's widths learned by the data-emphasized ELBO (Harvey et al. "
          "2026) match the validation grid within 1 point, at ≤ 1/5 of its selection CPU time", "—",
          "10_learned_scale", learned_scale.verdict,
          paper="not the paper's: DE-ELBO widths within 1 pt of the grid's at ≤ 1/5 of its cost",
          primary=Primary("DE-ELBO − grid widths, n = 1 000, the worst of MAP and the sampler over both priors; "
                          "κ-scaled (first registration: also unscaled)",
                          {"widths": ("de_elbo", learned_scale.MATCHED), "n_train": 1000},
                          regimes={"cold": {"arm": ("map", "cold")}, "T1": {"arm": "T1"}})),
)}
RERUN = tuple(c.id for c in CLAIMS.values() if c.rerun)       # the claims the third protocol re-runs, each both ways


def claim(id: str) -> Claim:
    """The claim ``id``; one clear error for an unknown one."""
    if id not in CLAIMS:
        raise ValueError(f"unknown claim id {id!r}; valid: {', '.join(CLAIMS)}")
    return CLAIMS[id]


def simulation_table(sims: int = 100, null_sims: int = 200) -> pd.DataFrame:
    """Each simulated claim's rate of each verdict word at each effect of its simulation's ``deltas``."""
    return pd.DataFrame([{"claim": c.id, "effect_points": 100 * d, "simulations": null_sims if d == 0 else sims,
                          **simulate.rates(c.simulation, d, null_sims if d == 0 else sims, seed=1).round(3)}
                         for c in SIMULATED for d in c.simulation.deltas])


# the order the simulation table lists them in (the one it was first written in)
SIMULATED = tuple(CLAIMS[c] for c in ("C2", "C10", "C3", "C6", "C4", "C5", "C7", "C8", "C9"))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m repro.claims", description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=100, help="simulations of each effect")
    parser.add_argument("--null-sims", type=int, default=200, help="simulations of each null")
    parser.add_argument("--out", default=None, help="CSV to write (REPORT.md reads results/cpu/claims/simulation.csv)")
    args = parser.parse_args(argv)
    df = simulation_table(args.sims, args.null_sims)
    print(df.to_string(index=False))
    if args.out:
        df.to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
