"""Analyses of the test predictions the transfer grid saves per run (notebooks 05-07 need no retraining).

Each finished run of ``repro.experiments.studies`` has ``transfer/predictions/<key>.pt`` with ``probs`` (float16, [N, C]) and
``labels`` on the clean test subset, and, for CIFAR-10 test runs, ``shift_probs``, ``shift_labels`` and
``shift_cell`` on the shift set of :mod:`repro.data.shift`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .metrics import NLL_EPS, accuracy, nll, reliability_bins
from .stats import finished
from ..profiles import Profile, results_dir
from ..data.shift import CELLS

def predictions_dir(profile: Profile, study: str = "transfer") -> Path:
    return results_dir(profile) / study / "predictions"


def load_predictions(profile: Profile, key: str, study: str = "transfer") -> dict:
    """The saved predictions of one finished run of ``study`` (``transfer`` or ``segmentation``)."""
    path = predictions_dir(profile, study) / f"{key}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no predictions for run {key} at {path}: rerun its study")
    return torch.load(path, weights_only=True)


def _ok(rows: pd.DataFrame) -> pd.DataFrame:
    return finished(rows)


def per_image(probs: torch.Tensor, labels: torch.Tensor, prefix: str = "") -> dict[str, np.ndarray]:
    """Per-image ``accuracy`` (0/1), ``nll`` (-log p(true), floored at NLL_EPS) and ``overconfidence`` (top-class
    probability - correct) of [N, C] probabilities: their means are the run's metrics (statistics in repro.analysis.stats)."""
    p = probs.float()
    conf, pred = p.max(dim=1)
    correct = pred.eq(labels).double()
    p_true = p.gather(1, labels.long().unsqueeze(1)).squeeze(1).double().clamp_min(NLL_EPS)
    out = {"accuracy": correct, "nll": -p_true.log(), "overconfidence": conf.double() - correct}
    return {prefix + k: v.numpy() for k, v in out.items()}


def per_image_outcomes(profile: Profile, rows: pd.DataFrame) -> dict[str, dict[str, np.ndarray]]:
    """Run key -> per-image outcomes on the clean test subset (and ``shift_*`` on the shift set, where saved)."""
    out = {}
    for key in _ok(rows).key.unique():
        p = load_predictions(profile, key)
        out[key] = per_image(p["probs"], p["labels"])
        if "shift_probs" in p:
            out[key] |= per_image(p["shift_probs"], p["shift_labels"], prefix="shift_")
    return out


def ensemble_predictions(profile: Profile, members: pd.DataFrame) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Per seed, the deep ensemble's test probabilities (the mean of its members') and the labels. Every member must
    have finished: a seed whose ensemble lost one would silently be a smaller ensemble than the claim compares."""
    if not (failed := members[members.status != "ok"]).empty:
        raise ValueError(f"{len(failed)} deep-ensemble member(s) did not finish (seed, member: "
                         f"{', '.join(f'{s}, {m}' for s, m in zip(failed.seed, failed.member))}); `make studies` "
                         "retries them")
    out = {}
    for seed, g in members.groupby("seed"):
        preds = [load_predictions(profile, k) for k in g.key]
        out[int(seed)] = torch.stack([p["probs"].float() for p in preds]).mean(0), preds[0]["labels"]
    return out


def ensemble_outcomes(profile: Profile, members: pd.DataFrame, prefix: str = "ensemble") -> dict[str, dict[str, np.ndarray]]:
    """Per seed, key ``<prefix>-<seed>`` -> per-image outcomes of the deep ensemble (:func:`ensemble_predictions`)."""
    return {f"{prefix}-{seed}": per_image(probs, labels)
            for seed, (probs, labels) in ensemble_predictions(profile, members).items()}


def confidence_gaps(profile: Profile, rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` with ``confidence`` (mean top-class probability) and ``overconfidence`` (confidence - accuracy)."""
    rows = _ok(rows).copy()
    conf = [load_predictions(profile, k)["probs"].float().max(dim=1).values.mean().item() for k in rows.key]
    return rows.assign(confidence=conf, overconfidence=lambda d: d.confidence - d.accuracy)


def pooled_reliability(profile: Profile, rows: pd.DataFrame, by: list[str], n_bins: int = 15) -> pd.DataFrame:
    """Reliability-diagram bins per group of ``by``, pooling the test predictions of the group's runs (seeds)."""
    out = []
    for group, g in _ok(rows).groupby(by, sort=False):
        preds = [load_predictions(profile, k) for k in g.key]
        bins = reliability_bins(torch.cat([p["probs"].float() for p in preds]), torch.cat([p["labels"] for p in preds]),
                                n_bins=n_bins)
        out.append(bins.assign(**dict(zip(by, group if isinstance(group, tuple) else (group,)))))
    return pd.concat(out, ignore_index=True)


def shift_by_cell(profile: Profile, rows: pd.DataFrame) -> pd.DataFrame:
    """Accuracy and NLL of every run on every (corruption, severity) cell of the shift set (one row each)."""
    out = []
    for _, r in _ok(rows).iterrows():
        p = load_predictions(profile, r.key)
        if "shift_probs" not in p:
            continue
        probs, labels, cell = p["shift_probs"].float(), p["shift_labels"], p["shift_cell"]
        for i in cell.unique().tolist():
            m = cell == i
            name, severity = CELLS[i] if i >= 0 else ("cifar10.1", 0)
            out.append({**r.to_dict(), "corruption": name, "severity": severity,
                        "cell_accuracy": accuracy(probs[m], labels[m]), "cell_nll": nll(probs[m], labels[m])})
    return pd.DataFrame(out)
