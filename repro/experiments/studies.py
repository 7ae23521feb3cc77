"""The downstream studies of notebooks 03-05 (and the runs 06-07 reuse): tuning, rank, scale, five-way, ensemble.

Every run goes through one resumable grid, ``results/<profile>/transfer/runs.csv`` (predictions in
``transfer/predictions/<key>.pt``), so a setting shared by two studies is trained once, and several
processes can work through the same grid (``python -m repro.studies --profile cpu --worker 1``).

Tuning protocol (the test split is never looked at):
  * data: the validation split (``val_fraction``) of a ``study_n``-image CIFAR-10 training subset, first seed;
  * criterion: highest validation accuracy, ties broken by lower validation NLL;
  * order (coordinate-wise, each stage at the winners of the earlier ones); a "sweep" extends its log grid a decade
    at a time while the best value is at an edge (at most 3 times per side):
      - SGD transfer, per prior kind: lr over ``lr_grid``, then weight decay x ``factor_grid``;
      - MAP, non-learned prior: lr over ``lr_grid`` (alpha = 1), then alpha x ``factor_grid``;
      - MAP, learned prior, per kind: lr of SGD transfer (same initialisation), a sweep of lambda from ``scales``,
        then head variance x ``factor_grid``;
      - MAP, isotropic learned-mean prior: lr of SGD transfer, alpha = 1e-2 x ``factor_grid``;
      - Bayes (T = 1), each prior: the MAP winners, then a sweep of the prior's width again (lambda from ``scales``;
        alpha from the MAP alpha x ``factor_grid``), because the posterior's spread, unlike the MAP point, depends
        on it directly;
  * Fashion-MNIST runs reuse the CIFAR-10 values (no second tuning budget at this scale).

Amendment (recorded in REPORT.md): the first version of this protocol gave each Bayes approach its MAP
counterpart's values. The first rank-ablation runs showed that this puts the SSL Bayes runs at lambda = 1e6
(prior standard deviation ~2 per weight), where SGHMC at T = 1 wanders far from the source solution; the Bayes
width sweep was added before the rest of the grid ran. The runs made under the first version stay in the CSV.
"""
from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd
import torch

from ..analysis.metrics import classification_metrics
from ..analysis.predictions import load_predictions, predictions_dir
from .pretrain import prior_protocol
from ..profiles import Profile, get_profile, results_dir
from ..runner import Run, run_grid
from .transfer import check_approach, default_params, run_transfer

STUDY = "transfer"     # the grid lives in results/<profile>/transfer/
KINDS = ("ssl", "supervised", "supervised_matched")   # the last for C5 at equal backbone quality
FIVE_WAY = ("bayes_learned", "map_learned", "sgd_transfer", "bayes_nonlearned", "map_nonlearned")
MAX_EXTENSIONS = 3


def grid_csv(profile: str | Profile, study: str = STUDY) -> Path:
    return results_dir(profile) / study / "runs.csv"


def run_study(profile: str | Profile, study: str, settings: Iterable[dict], defaults: Callable[..., dict],
              run: Callable[[Profile, dict], dict], desc: str | None = None) -> pd.DataFrame:
    """Run (or read back) every setting of ``study``'s shared grid; each setting is ``defaults`` overrides and runs as
    ``run(profile, params)``. One row per setting, in order."""
    profile = get_profile(profile)
    runs = [Run(study, keyed_on_prior(profile, defaults(profile, **s))) for s in settings]
    return run_grid(runs, lambda r: run(profile, r.params), grid_csv(profile, study),
                    predictions_dir=predictions_dir(profile, study), desc=desc, shared=True)


def keyed_on_prior(profile: Profile, params: dict) -> dict:
    """``params`` plus the protocol hash of the source prior the run starts from (``prior_protocol``), so that a run
    made with another prior has another key and is never read back for this one (see :mod:`repro.pretrain`).

    Priors fitted before protocols were hashed (``"v1"``) add nothing: the runs recorded with them keep their keys, and
    no run keyed on a hashed prior can ever match one of them."""
    kind = params.get("prior_kind", "none")
    protocol = "v1" if kind == "none" else prior_protocol(profile, kind)
    return params if protocol == "v1" else params | {"prior_protocol": protocol}


def run_settings(profile: str | Profile, settings: Iterable[dict], desc: str | None = None) -> pd.DataFrame:
    """Run (or read back) transfer settings (``default_params`` overrides); one row per setting, in order."""
    return run_study(profile, STUDY, settings, default_params, run_transfer, desc)


# ------------------------------------------------------------------------------------------------- tuning

def best_row(df: pd.DataFrame, metric: str = "accuracy") -> pd.Series:
    """The finished row with the highest ``metric`` (ties: lower NLL where there is one)."""
    ok = df[df.status == "ok"]
    if ok.empty:
        raise RuntimeError(f"every tuning run failed: {sorted(set(df.status))}")
    keys = [metric] + (["nll"] if "nll" in ok else [])
    return ok.sort_values(keys, ascending=[False] + [True] * (len(keys) - 1), kind="stable").iloc[0]


def _val(profile: Profile, approach: str, kind: str, **kw) -> dict:
    return dict(approach=approach, prior_kind=kind, split="val", n_train=profile.study_n,
                seed=profile.seeds[0], dataset="cifar10", **kw)


def _stage(profile: Profile, base: dict, name: str, values: Iterable[float] | None, desc: str) -> dict:
    """Try ``name`` over ``values`` (default: its default value x ``factor_grid``) at ``base``; return ``base``
    with the winner."""
    if values is None:
        default = base.get(name, default_params(profile, base["approach"])[name])
        values = [default * f for f in profile.factor_grid]
    rows = run_settings(profile, [base | {name: v} for v in values], desc=desc)
    return base | {name: float(best_row(rows)[name])}


def sweep(profile: Profile, base: dict, name: str, grid: Iterable[float], desc: str, seeds: Iterable[int] | None = None,
          run: Callable | None = None, metric: str = "accuracy") -> tuple[pd.DataFrame, list[float]]:
    """Runs of ``base`` over ``name`` (every seed per value), the grid extended a decade at a time while the best
    mean ``metric`` is at an edge (at most ``MAX_EXTENSIONS`` per side). Returns all rows and the final grid.
    ``run`` runs a list of settings (default: the transfer grid; :mod:`repro.segmentation` passes its own)."""
    seeds = list(seeds or [base.get("seed", profile.seeds[0])])
    grid = sorted(grid)
    added = {"low": 0, "high": 0}
    while True:
        rows = (run or run_settings)(profile, [base | {name: v, "seed": seed} for v in grid for seed in seeds], desc=desc)
        score = rows[rows.status == "ok"].groupby(name)[metric].mean()
        best = score.idxmax() if not score.empty else None
        if best == grid[-1] and added["high"] < MAX_EXTENSIONS:
            grid.append(grid[-1] * 10)
            added["high"] += 1
        elif best == grid[0] and added["low"] < MAX_EXTENSIONS:
            grid.insert(0, grid[0] / 10)
            added["low"] += 1
        else:
            return rows, grid


def tuned(profile: str | Profile, approach: str, kind: str = "ssl") -> dict:
    """The hyperparameters of ``approach`` chosen on the validation split (see the module docstring).

    Cached per process: once its runs exist the answer cannot change (``run_grid`` returns only when every run of
    a stage has a row, whichever process ran it).
    """
    return dict(_tuned(get_profile(profile), approach, kind))


@functools.lru_cache(maxsize=None)
def _tuned(profile: Profile, approach: str, kind: str) -> tuple[tuple[str, float], ...]:
    return tuple(_tune(profile, approach, kind).items())


def _tune(profile: Profile, approach: str, kind: str) -> dict:
    a = check_approach(approach)
    if a.prior == "weight_decay":
        s = _stage(profile, _val(profile, "sgd_transfer", kind), "lr", profile.lr_grid, f"tune sgd/{kind}: lr")
        s = _stage(profile, s, "weight_decay", None, f"tune sgd/{kind}: wd")
        return {k: s[k] for k in ("lr", "weight_decay")}
    if a.bayes:   # the MAP winners, then the prior's width again for the sampler (T = 1)
        map_name = approach.replace("bayes_", "map_")
        s = _val(profile, approach, kind, **tuned(profile, map_name, kind))
        name = "scale" if a.prior == "learned" else "alpha"
        grid = profile.scales if name == "scale" else [s[name] * f for f in profile.factor_grid]
        rows, _ = sweep(profile, s, name, grid, f"tune {approach}/{kind}: {name}")
        return {k: v for k, v in s.items() if k in ("lr", "scale", "head_var", "alpha")} | {name: float(best_row(rows)[name])}
    if a.prior == "isotropic":
        s = _stage(profile, _val(profile, "map_nonlearned", "none"), "lr", profile.lr_grid, "tune non-learned: lr")
        s = _stage(profile, s, "alpha", None, "tune non-learned: alpha")
        return {k: s[k] for k in ("lr", "alpha")}
    lr = tuned(profile, "sgd_transfer", kind)["lr"]
    if a.prior == "isotropic_mean":
        s = _stage(profile, _val(profile, "map_isotropic", kind, lr=lr), "alpha", None, f"tune isotropic/{kind}: alpha")
        return {k: s[k] for k in ("lr", "alpha")}
    rows, _ = sweep(profile, _val(profile, "map_learned", kind, lr=lr), "scale", profile.scales,
                    f"tune map_learned/{kind}: scale")
    s = _val(profile, "map_learned", kind, lr=lr, scale=float(best_row(rows).scale))
    s = _stage(profile, s, "head_var", None, f"tune learned/{kind}: head var")
    return {k: s[k] for k in ("lr", "scale", "head_var")}


def tuning_table(profile: str | Profile) -> pd.DataFrame:
    """The tuned hyperparameters of every approach (one row per approach and prior kind)."""
    rows = [{"approach": a, "prior_kind": k, **tuned(profile, a, k)} for a, k in TUNE_ORDERS[0]]
    return pd.DataFrame(rows)


def setting(profile: str | Profile, approach: str, kind: str = "ssl", **kw) -> dict:
    """A test-split setting of ``approach`` with its tuned hyperparameters; ``kw`` (n_train, seed, ...) win."""
    kind = kind if check_approach(approach).init == "pretrained" else "none"
    return {"approach": approach, "prior_kind": kind, **tuned(profile, approach, kind), **kw}


# ------------------------------------------------------------------------------------------------ studies

def rank_ablation(profile: str | Profile, kind: str = "ssl") -> pd.DataFrame:
    """C2: Bayes + learned prior at every rank of the profile, and the isotropic learned-mean prior."""
    profile = get_profile(profile)
    base = dict(n_train=profile.study_n, dataset="cifar10")
    settings = [setting(profile, "bayes_learned", kind, rank=r, seed=s, **base)
                for r in profile.ranks for s in profile.seeds]
    settings += [setting(profile, "bayes_isotropic", kind, seed=s, **base) for s in profile.seeds]
    return run_settings(profile, settings, desc="C2 rank ablation")


def scale_study(profile: str | Profile, kind: str = "ssl") -> pd.DataFrame:
    """C3: MAP and Bayes with the learned prior over lambda on the test split, every seed, starting from the grid
    each approach's validation sweep ended with and extended until the best lambda is interior."""
    profile = get_profile(profile)
    rows = []
    for approach in ("map_learned", "bayes_learned"):
        s = setting(profile, approach, kind, n_train=profile.study_n)
        val_base = _val(profile, approach, kind, **{k: v for k, v in s.items() if k in ("lr", "head_var")})
        _, grid = sweep(profile, val_base, "scale", profile.scales, f"tune {approach}/{kind}: scale")
        rows.append(sweep(profile, s, "scale", grid, f"C3 scale sweep ({approach})", seeds=profile.seeds)[0])
    return pd.concat(rows, ignore_index=True)


def five_way(profile: str | Profile, dataset: str = "cifar10", kinds: Iterable[str] = KINDS) -> pd.DataFrame:
    """C4-C6: the five approaches (learned ones per prior kind) at every training-set size and seed."""
    profile = get_profile(profile)
    settings = []
    for n in profile.train_sizes:
        for seed in profile.seeds:
            for approach in FIVE_WAY:
                for kind in (kinds if check_approach(approach).init == "pretrained" else ("none",)):
                    settings.append(setting(profile, approach, kind, n_train=n, seed=seed, dataset=dataset))
    return run_settings(profile, settings, desc=f"C4-C6 five-way ({dataset})")


def temperature_ablation(profile: str | Profile, kind: str = "ssl") -> pd.DataFrame:
    """Bayes + learned prior at ``study_n`` over the profile's temperatures (the authors' code ran at T ~ 0), at the
    prior width tuned for Bayes at T = 1 and at the (wider) one tuned for MAP. The authors' code runs one
    cosine-annealed SGLD pass at T ~ 4e-8 (its ``cyclic_lr`` cannot be set from its arguments and its SGLD step has no
    noise switch), closest to MAP at a MAP-like width; the T ~ 0 rows here are the cyclical sampler without noise."""
    profile = get_profile(profile)
    scales = dict.fromkeys([tuned(profile, "bayes_learned", kind)["scale"], tuned(profile, "map_learned", kind)["scale"]])
    return run_settings(profile, [setting(profile, "bayes_learned", kind, n_train=profile.study_n, seed=s, temperature=t,
                                          scale=lam) for lam in scales for t in profile.temperatures for s in profile.seeds],
                        desc="temperature ablation")


def deep_ensemble(profile: str | Profile, kind: str = "ssl") -> pd.DataFrame:
    """C10: ``bma_samples`` SGD-transfer members (member 0 is the five-way run) per seed at ``study_n``."""
    profile = get_profile(profile)
    settings = [setting(profile, "sgd_transfer", kind, n_train=profile.study_n, seed=s, member=m)
                for s in profile.seeds for m in range(profile.bma_samples)]
    return run_settings(profile, settings, desc="C10 deep ensemble")


def ensemble_metrics(profile: str | Profile, kind: str = "ssl") -> pd.DataFrame:
    """C10: per seed, the metrics of the deep ensemble (the mean of its members' test probabilities)."""
    rows = deep_ensemble(profile, kind)
    out = []
    for seed, g in rows[rows.status == "ok"].groupby("seed"):
        preds = [load_predictions(profile, key) for key in g.key]
        probs = torch.stack([p["probs"].float() for p in preds]).mean(0)
        out.append({"seed": seed, "members": len(g), **classification_metrics(probs, preds[0]["labels"])})
    return pd.DataFrame(out)


def _segmentation(profile: Profile) -> pd.DataFrame:
    from .segmentation import segmentation_study   # imports this module: load it only when the stage runs

    return segmentation_study(profile)


# In the order a worker runs them by default (notebook 08's grid last).
STAGES: dict[str, Callable[[Profile], object]] = {
    "C2": rank_ablation, "five_way": five_way, "temperature": temperature_ablation, "C10": deep_ensemble,
    "C3": scale_study, "fashion": lambda p: five_way(p, "fashion-mnist", kinds=("ssl",)), "segmentation": _segmentation,
}
# Worker orders for the tuning families: two processes start on independent families.
TUNE_ORDERS = (
    [("sgd_transfer", "ssl"), ("map_learned", "ssl"), ("bayes_learned", "ssl"), ("map_isotropic", "ssl"),
     ("bayes_isotropic", "ssl"), ("map_nonlearned", "none"), ("bayes_nonlearned", "none"),
     ("sgd_transfer", "supervised"), ("map_learned", "supervised"), ("bayes_learned", "supervised"),
     ("sgd_transfer", "supervised_matched"), ("map_learned", "supervised_matched"), ("bayes_learned", "supervised_matched")],
    [("sgd_transfer", "supervised_matched"), ("map_learned", "supervised_matched"), ("bayes_learned", "supervised_matched"),
     ("sgd_transfer", "supervised"), ("map_learned", "supervised"), ("bayes_learned", "supervised"),
     ("map_nonlearned", "none"), ("bayes_nonlearned", "none"), ("sgd_transfer", "ssl"), ("map_learned", "ssl"),
     ("bayes_learned", "ssl"), ("map_isotropic", "ssl"), ("bayes_isotropic", "ssl")],
)


def run_profile(profile: Profile, worker: int = 0, stages: Iterable[str] = tuple(STAGES)) -> None:
    """Every tuning family (in ``worker``'s order), then each of ``stages``: a profile's downstream grids."""
    for approach, kind in TUNE_ORDERS[worker]:
        print(approach, kind, tuned(profile, approach, kind), flush=True)
    for stage in stages:
        STAGES[stage](profile)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m repro.studies", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=None)
    parser.add_argument("--worker", type=int, default=0, choices=range(len(TUNE_ORDERS)),
                        help="which tuning order to start with (run one process per worker)")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, from {', '.join(STAGES)}")
    args = parser.parse_args(argv)
    profile = get_profile(args.profile)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        parser.error(f"unknown stage(s) {unknown}; valid: {', '.join(STAGES)}")
    run_profile(profile, args.worker, stages)


if __name__ == "__main__":
    main()
