"""How good a source backbone is (notebook 01): linear probes, the SWAG checks, the quality-matched epoch (C5).

Every state of a backbone is scored the same way, so that numbers compare across kinds, epochs and SWAG draws:

* ``source_acc``: the supervised head on the source val split (NaN for SSL, which has no head);
* ``probe_source_acc``: a linear probe on frozen features, source train subset -> source val;
* ``probe_cifar10_acc``: a linear probe, CIFAR-10 train subset (``probe_n``) -> CIFAR-10 test subset (``probe_test_n``).

Notebook 01's tables of these scores (:func:`source_evaluation`, :func:`probes`, :func:`spectrum`) are read back
while the priors they describe are unchanged (:func:`per_prior_table`), so re-running the notebook on finished
priors trains no probe and rewrites them byte for byte. :func:`outputs` lists what the notebook builds.
"""
from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd
import torch
from torch import Tensor, nn

from .. import data
from . import pretrain
from ..method.prior_files import unusable
from ..profiles import Profile, results_dir
from ..train import features, linear_probe, load_flat_, predict_logits, update_bn


@dataclass(frozen=True)
class ProbeData:
    """The fixed image sets every state is scored on."""
    source_x: Tensor
    source_y: Tensor
    val_x: Tensor
    val_y: Tensor
    cifar_x: Tensor
    cifar_y: Tensor
    cifar_test_x: Tensor
    cifar_test_y: Tensor


@functools.lru_cache(maxsize=2)
def probe_data(profile: Profile) -> ProbeData:
    train, _, _, val, va = pretrain.source_splits(profile)
    probe = data.stratified_subset(train.targets, min(profile.probe_n, len(train)), seed=1)
    c_train, c_test = data.load("cifar10", "train"), data.load("cifar10", "test")
    ci = data.stratified_subset(c_train.targets, min(profile.probe_n, len(c_train)), seed=0)
    ct = data.stratified_subset(c_test.targets, min(profile.probe_test_n or len(c_test), len(c_test)), seed=0)
    return ProbeData(train.images[probe], train.targets[probe], val.images[va], val.targets[va],
                     c_train.images[ci], c_train.targets[ci], c_test.images[ct], c_test.targets[ct])


def score(model: nn.Module, kind: str, d: ProbeData) -> dict[str, float]:
    """``source_acc``, ``probe_source_acc`` and ``probe_cifar10_acc`` of one source model (see the module docstring)."""
    bb = model.backbone
    out = {"source_acc": float("nan"),
           "probe_source_acc": linear_probe(features(bb, d.source_x), d.source_y, features(bb, d.val_x), d.val_y),
           "probe_cifar10_acc": linear_probe(features(bb, d.cifar_x), d.cifar_y, features(bb, d.cifar_test_x),
                                             d.cifar_test_y)}
    if pretrain.base_kind(kind) == "supervised":
        out["source_acc"] = (predict_logits(model, d.val_x).argmax(1) == d.val_y).float().mean().item()
    return out


def evaluate_source(profile: Profile, kind: str, n_samples: int = 5, seed: int = 0) -> pd.DataFrame:
    """One row per model state: the pre-trained checkpoint, the SWA mean, ``n_samples`` SWAG draws at scale 1.

    A draw replaces the backbone by a sample of the learned prior and keeps the head at the SWA mean. Every state is
    scored with BatchNorm statistics recomputed on the same augmented source probe images (:func:`.pretrain.bn_images`),
    so the SWA check compares weights, not ways of estimating BatchNorm statistics; the checkpoint is also scored with
    the running statistics it was trained with (``pretrained_running_bn``, outside the check).
    """
    d = probe_data(profile)
    bn = pretrain.bn_images(profile, d.source_x)
    sizes = {"n_source_val": len(d.val_y), "n_cifar10_test": len(d.cifar_test_y)}

    def scored(model: nn.Module, state: str, refresh: bool = True) -> dict:
        if refresh:
            update_bn(model, bn)
        return {"kind": kind, "state": state, **score(model, kind, d)}

    rows = [scored(pretrain.load_source_model(profile, kind, "pretrained"), "pretrained_running_bn", refresh=False),
            scored(pretrain.load_source_model(profile, kind, "pretrained"), "pretrained"),
            scored(pretrain.load_source_model(profile, kind, "swa"), "swa_mean")]
    prior = pretrain.load_source_prior(profile, kind, scale=1.0, eps=0.0)
    g = torch.Generator().manual_seed(seed)
    for i in range(n_samples):
        model = pretrain.load_source_model(profile, kind, "swa")
        load_flat_(model.backbone, prior.sample(1, generator=g)[0])
        rows.append(scored(model, f"swag_sample_{i}"))
    return pd.DataFrame(rows).assign(**sizes)


def swa_check(evaluation: pd.DataFrame) -> pd.DataFrame:
    """Per kind: checkpoint, SWA mean and mean of the SWAG draws on the source val metric (the head for supervised
    backbones, the source probe for SSL) and the CIFAR-10 probe. ``swa_ok``, the stationarity check of the SWAG
    protocol: on both, the SWA mean is at least as good as the checkpoint, i.e. below it by at most one binomial
    standard error of the evaluation set (``n_source_val``, ``n_cifar10_test`` images), the noise of the check itself."""
    rows = []
    for kind, g in evaluation.groupby("kind", sort=False):
        metric = "source_acc" if pretrain.base_kind(kind) == "supervised" else "probe_source_acc"
        state = g.state.where(~g.state.str.startswith("swag_sample"), "swag_samples")
        m = g.assign(state=state).groupby("state")[[metric, "probe_cifar10_acc"]].mean()
        row = {"kind": kind, "source_metric": metric}
        ok = True
        for name, col, n in (("source", metric, g.n_source_val.iloc[0]), ("cifar10", "probe_cifar10_acc",
                                                                            g.n_cifar10_test.iloc[0])):
            for st in ("pretrained", "swa_mean", "swag_samples"):
                row[f"{name}_{st}"] = m.loc[st, col]
            se = (row[f"{name}_pretrained"] * (1 - row[f"{name}_pretrained"]) / n) ** 0.5
            row[f"{name}_tolerance"] = se
            ok &= bool(row[f"{name}_swa_mean"] >= row[f"{name}_pretrained"] - se)
        rows.append(row | {"swa_ok": ok})
    return pd.DataFrame(rows)


def fit_stationary(profile: Profile, kind: str, from_epoch: int | None = None,
                   lrs: tuple[float, ...] = pretrain.SWAG_LRS) -> pd.DataFrame:
    """Fit ``kind``'s prior at the first of ``lrs`` whose SWA mean passes :func:`swa_check` (the last lr is kept even
    if it fails: a failure is reported, not tuned away). Every attempt's check is appended to
    ``prior_fitting/swag_attempts.csv`` with the protocol version; a failed attempt's prior is deleted (its numbers stay in
    that table). An existing prior is kept as it is. Returns the attempts of ``kind`` under the current protocol."""
    from ..plots import save_table

    out, log = pretrain.artifacts(profile, kind), results_dir(profile) / "prior_fitting" / "swag_attempts.csv"
    if out.prior.exists() and (reason := unusable(out.prior)):    # kept beside, as <name>.unreadable, and fitted again
        out.prior.replace(out.prior.with_name(out.prior.name + ".unreadable"))
        warnings.warn(f"{reason}; set aside as {out.prior.name}.unreadable, fitting it again")
    attempts = pd.read_csv(log) if log.exists() else pd.DataFrame()
    if out.prior.exists():
        pretrain.prepare(profile, kind, from_epoch=from_epoch)     # refuses a prior fitted under another protocol
    else:
        for lr in lrs:
            pretrain.prepare(profile, kind, from_epoch=from_epoch, swag_lr=lr)
            check = swa_check(evaluate_source(profile, kind)).assign(swag_lr=lr, version=pretrain.PROTOCOL_VERSION)
            attempts = pd.concat([attempts, check], ignore_index=True)
            save_table(attempts, profile, "prior_fitting/swag_attempts")
            if check.swa_ok.iloc[0] or lr == lrs[-1]:
                break
            out.prior.unlink()
            out.swa.unlink()
    if attempts.empty:
        return attempts
    return attempts[(attempts.kind == kind) & (attempts.version == pretrain.PROTOCOL_VERSION)]
def probes_by_epoch(profile: Profile, kind: str) -> pd.DataFrame:
    """The scores of the pre-training state after every epoch (from :func:`repro.experiments.pretrain.epoch_state`)."""
    d, rows, epoch = probe_data(profile), [], 1
    while (path := pretrain.epoch_state(profile, kind, epoch)).exists():
        model = pretrain.build_source_model(profile, kind, pretrain.source_num_classes(profile))
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        rows.append({"kind": kind, "epoch": epoch, **score(model, kind, d)})
        epoch += 1
    if not rows:
        raise FileNotFoundError(f"no per-epoch states of {kind!r} in {path.parent}: pre-train it first "
                                f"(repro.experiments.pretrain.prepare({profile.name!r}, {kind!r}))")
    return pd.DataFrame(rows)


def matched_epoch(probes: pd.DataFrame) -> int:
    """The supervised epoch whose CIFAR-10 probe is closest to the final SSL backbone's (ties: the later epoch)."""
    ssl, sup = probes[probes.kind == "ssl"], probes[probes.kind == "supervised"]
    if ssl.empty or sup.empty:
        raise ValueError("matched_epoch needs the probes by epoch of both the 'ssl' and the 'supervised' backbone")
    target = ssl.sort_values("epoch").probe_cifar10_acc.iloc[-1]
    gap = (sup.probe_cifar10_acc - target).abs()
    return int(sup.loc[gap == gap.min(), "epoch"].max())


def centre_quality(profile: Profile) -> dict[str, float]:
    """Each prior's centre, its SWA mean, scored by the CIFAR-10 linear probe (notebook 01's ``source_evaluation``):
    how close C5's quality-matched supervised prior came to SSL's where it counts, the mean the prior pulls toward."""
    path = results_dir(profile) / "prior_fitting" / "source_evaluation.csv"
    if not path.exists():
        raise pretrain.missing(path, profile)
    df = pd.read_csv(path)
    centre = df[df.state == "swa_mean"]
    return dict(zip(centre.kind, centre.probe_cifar10_acc.astype(float)))


def snapshot_norms(profile: Profile, kind: str) -> pd.DataFrame:
    """The backbone's norm ||θ|| at the start of SWAG (snapshot 0) and at every snapshot: the filter-norm drift."""
    meta = pretrain.load_source_prior(profile, kind).meta
    norms = [meta["start_norm"], *meta["snapshot_norms"]]
    return pd.DataFrame({"kind": kind, "snapshot": range(len(norms)), "norm": norms})



# ---------------------------------------------------------------------------------------- notebook 01's tables

TABLES = ("source_evaluation", "swa_check", "snapshot_norms", "swag_spectrum")    # in prior_fitting/, every profile


def outputs(profile: Profile) -> list[Path]:
    """What notebook 01 builds: the prior of every kind the profile fits and its tables (the probes by epoch only
    where it fits the quality-matched prior). A claim's notebooks need all of them."""
    folder = results_dir(profile) / "prior_fitting"
    tables = TABLES + (("probes_by_epoch",) if pretrain.MATCHED in pretrain.source_kinds(profile) else ())
    return ([pretrain.artifacts(profile, k).prior for k in pretrain.source_kinds(profile)]
            + [folder / f"{t}.csv" for t in tables])


def per_prior_table(profile: Profile, name: str, kinds: Iterable[str], compute: Callable[[str], pd.DataFrame]) -> pd.DataFrame:
    """``results/<profile>/prior_fitting/<name>.csv``, one block of rows per kind, saved and returned. A kind's rows are
    read back when they were computed for the prior on disk (their ``prior_protocol`` is its protocol hash), else
    ``compute(kind)`` makes them. Reading back keeps the committed numbers exactly: re-computed probes move in their
    last digits with the thread count, and cost minutes."""
    from ..plots import save_table

    path = results_dir(profile) / "prior_fitting" / f"{name}.csv"
    old = pd.read_csv(path, dtype={"kind": str, "prior_protocol": str}) if path.exists() else pd.DataFrame()
    parts = []
    for kind in kinds:
        protocol = pretrain.prior_protocol(profile, kind)
        cached = old[(old.kind == kind) & (old.prior_protocol == protocol)] if "prior_protocol" in old else old.iloc[:0]
        parts.append(cached if not cached.empty else compute(kind).assign(prior_protocol=protocol))
    table = pd.concat(parts, ignore_index=True)
    save_table(table, profile, f"prior_fitting/{name}")
    return table


def source_evaluation(profile: Profile, kinds: Iterable[str]) -> pd.DataFrame:
    """:func:`evaluate_source` of every kind (notebook 01's ``source_evaluation.csv``, read back when unchanged)."""
    return per_prior_table(profile, "source_evaluation", kinds, functools.partial(evaluate_source, profile))


def probes(profile: Profile, kinds: Iterable[str]) -> pd.DataFrame:
    """:func:`probes_by_epoch` of every kind (``probes_by_epoch.csv``, read back while the kind's prior is unchanged:
    its protocol hash covers the pre-training the epochs come from)."""
    return per_prior_table(profile, "probes_by_epoch", kinds, functools.partial(probes_by_epoch, profile))


def spectrum(profile: Profile, kinds: Iterable[str]) -> pd.DataFrame:
    """The singular values of each prior's deviations (``swag_spectrum.csv``, read back while the prior is unchanged)."""
    def one(kind: str) -> pd.DataFrame:
        sv = pretrain.load_source_prior(profile, kind).singular_values().numpy()
        return pd.DataFrame({"kind": kind, "index": range(1, len(sv) + 1), "singular_value": sv})
    return per_prior_table(profile, "swag_spectrum", kinds, one)
