"""The source task (paper step i): pre-train a backbone, then fit SWAG around it and save the prior.

Two kinds, as in the paper: ``supervised`` (cross-entropy on the source labels) and ``ssl``
(SimCLR / NT-Xent). SWAG is collected on the *same* loss the backbone was trained with, over the whole
model; the saved prior is its marginal over the backbone. Every stage resumes from its checkpoint and
is skipped when its artifact exists, so notebook 01 can be re-run or interrupted freely.

Artifacts in ``results/<profile>/priors/``: ``{kind}_pretrained.pt`` (model state), ``{kind}_swa.pt``
(model at the SWAG mean, BatchNorm statistics recomputed), ``{kind}_prior.pt`` (mean, diagonal,
deviations; float16 deviations to keep it small).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import data
from .models import Classifier, build_backbone
from .priors import atomic_torch_save, load_prior, parameter_layout
from .profiles import Profile, get_profile, results_dir
from .ssl import SimCLR, simclr_augment, simclr_loss
from .swag import SWAG
from .train import cross_entropy_loss, fit, flat_params, load_flat_, one_cycle, seed_everything, update_bn

KINDS = ("supervised", "ssl")

# Hyperparameters of the source task, recorded in every prior file.
HYPERPARAMETERS = {
    "supervised": dict(peak_lr=0.1, momentum=0.9, weight_decay=5e-4, swag_lr=0.01, label_smoothing=0.0),
    "ssl": dict(peak_lr=0.2, momentum=0.9, weight_decay=5e-4, swag_lr=0.01, nt_xent_temperature=0.5),
}


@dataclass(frozen=True)
class SourceArtifacts:
    kind: str
    pretrained: Path
    swa: Path
    prior: Path


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown prior kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    return kind


def artifacts(profile: str | Profile, kind: str) -> SourceArtifacts:
    folder = results_dir(profile) / "priors"
    return SourceArtifacts(check_kind(kind), folder / f"{kind}_pretrained.pt", folder / f"{kind}_swa.pt",
                           folder / f"{kind}_prior.pt")


def source_splits(profile: Profile) -> tuple[data.Split, torch.Tensor, torch.Tensor, data.Split, torch.Tensor]:
    """(train split, train indices, train labels, val split, val indices) of the profile's source subset."""
    train, val = data.load(profile.source_dataset, "train"), data.load(profile.source_dataset, "val")
    tr = data.stratified_subset(train.targets, profile.source_train_n or len(train), seed=0)
    va = data.stratified_subset(val.targets, profile.source_val_n or len(val), seed=0)
    return train, tr, train.targets[tr], val, va


def build_source_model(profile: Profile, kind: str, num_classes: int) -> nn.Module:
    backbone = build_backbone(profile.model, width=profile.width)
    return Classifier(backbone, num_classes) if check_kind(kind) == "supervised" else SimCLR(backbone)


def _loss_and_transform(profile: Profile, kind: str):
    if kind == "supervised":
        return cross_entropy_loss, data.train_transform(profile.source_dataset, profile.image_size)
    T = HYPERPARAMETERS["ssl"]["nt_xent_temperature"]
    return (lambda model, batch: simclr_loss(model, batch, T)), simclr_augment(profile.image_size)


def _optimizer(model: nn.Module, hp: dict) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=hp["peak_lr"], momentum=hp["momentum"],
                           weight_decay=hp["weight_decay"], nesterov=True)


def prepare(profile: str | Profile, kind: str, seed: int = 0) -> SourceArtifacts:
    """Pre-train and fit SWAG for one kind, unless its prior already exists. Returns the artifact paths."""
    profile = get_profile(profile)
    out = artifacts(profile, kind)
    if out.prior.exists():
        return out
    if profile.source_dataset not in data.DATASETS:
        raise RuntimeError(f"profile {profile.name!r} pre-trains on {profile.source_dataset!r}, which is not "
                           f"available here; the paper profile loads released weights instead")
    ckpt_dir = results_dir(profile) / "checkpoints"
    hp = HYPERPARAMETERS[kind]
    train, idx, labels, _, _ = source_splits(profile)
    images = train.images[idx]
    loss_fn, transform = _loss_and_transform(profile, kind)

    def epoch_batches(epoch: int):
        return data.batches(images, labels, profile.batch_size, shuffle=True, seed=seed * 1000 + epoch,
                            transform=transform, drop_last=True)

    steps_per_epoch = len(images) // profile.batch_size
    seed_everything(seed)
    model = build_source_model(profile, kind, train.num_classes)
    epochs = profile.source_epochs if kind == "supervised" else profile.ssl_epochs
    if not out.pretrained.exists():
        opt = _optimizer(model, hp)
        fit(model, loss_fn, epoch_batches, opt, epochs, lr_at=one_cycle(epochs * steps_per_epoch, hp["peak_lr"]),
            checkpoint=ckpt_dir / f"{kind}_pretrain.ckpt", desc=f"pre-train {kind}")
        atomic_torch_save(model.state_dict(), out.pretrained)
    model.load_state_dict(torch.load(out.pretrained, weights_only=True))

    # SWAG: constant learning rate around the pre-trained solution, evenly spaced snapshots.
    n_params = sum(p.numel() for p in model.parameters())
    swag = SWAG(n_params, max_rank=profile.swag_max_rank)
    total = profile.swag_epochs * steps_per_epoch
    every = max(1, total // profile.swag_snapshots)

    def collect(step: int) -> None:
        if (step + 1) % every == 0 and swag.n < profile.swag_snapshots:
            swag.collect(flat_params(model))

    opt = _optimizer(model, hp)
    fit(model, loss_fn, lambda e: epoch_batches(10_000 + e), opt, profile.swag_epochs, lr_at=lambda s: hp["swag_lr"],
        checkpoint=ckpt_dir / f"{kind}_swag.ckpt", on_step=collect, desc=f"SWAG {kind}", extra_state={"swag": swag})

    load_flat_(model, swag.mean.float())
    update_bn(model, images[: profile.batch_size * 20])           # unaugmented training images
    atomic_torch_save(model.state_dict(), out.swa)
    backbone = model.backbone
    meta = {"kind": kind, "profile": profile.name, "model": profile.model, "width": profile.width,
            "source_dataset": profile.source_dataset, "source_train_n": len(images), "epochs": epochs,
            "swag_epochs": profile.swag_epochs, "swag_every_steps": every, "batch_size": profile.batch_size,
            "seed": seed, **hp}
    swag.save(out.prior, layout=parameter_layout(backbone), meta=meta, factor_dtype=torch.float16,
              first=sum(p.numel() for p in backbone.parameters()))
    return out


def load_source_model(profile: str | Profile, kind: str, which: str = "swa") -> nn.Module:
    """The pre-trained (``which='pretrained'``) or SWA-mean (``'swa'``) source model."""
    profile = get_profile(profile)
    out = artifacts(profile, kind)
    path = {"pretrained": out.pretrained, "swa": out.swa}[which]
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run notebook 01 (or repro.pretrain.prepare) "
                                f"for profile {profile.name!r} first")
    num_classes = data.DATASETS[profile.source_dataset].num_classes
    model = build_source_model(profile, kind, num_classes)
    model.load_state_dict(torch.load(path, weights_only=True))
    return model


def load_source_prior(profile: str | Profile, kind: str, **kwargs):
    """The learned prior of ``kind`` (see :func:`repro.priors.load_prior` for scale, rank, ...)."""
    path = artifacts(profile, kind).prior
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run notebook 01 (or repro.pretrain.prepare) first")
    return load_prior(path, **kwargs)


def evaluate_source(profile: str | Profile, kind: str, n_samples: int = 5, seed: int = 0) -> "pd.DataFrame":
    """One row per model state (pre-trained, SWA mean, ``n_samples`` SWAG draws at scale 1).

    Columns: ``source_acc`` (the supervised head on the source val split; NaN for SSL),
    ``probe_source_acc`` (linear probe on frozen features, source train subset -> source val),
    ``probe_cifar10_acc`` (linear probe CIFAR-10 train subset -> test subset; pre-trained and SWA only).
    Samples replace the backbone by a draw from the learned prior, keep the rest at the SWA mean, and
    recompute BatchNorm statistics.
    """
    import pandas as pd
    from .train import features, linear_probe, predict_logits

    profile = get_profile(profile)
    train, _, _, val, va = source_splits(profile)
    probe_idx = data.stratified_subset(train.targets, min(profile.probe_n, len(train)), seed=1)
    src_x, src_y, val_x, val_y = train.images[probe_idx], train.targets[probe_idx], val.images[va], val.targets[va]
    c_train, c_test = data.load("cifar10", "train"), data.load("cifar10", "test")
    ci = data.stratified_subset(c_train.targets, min(profile.probe_n, len(c_train)), seed=0)
    ct = data.stratified_subset(c_test.targets, profile.downstream_test_n or len(c_test), seed=0)

    def row(name: str, model: nn.Module, cifar: bool) -> dict:
        bb = model.backbone
        r = {"kind": kind, "state": name,
             "source_acc": float("nan"), "probe_source_acc": linear_probe(features(bb, src_x), src_y, features(bb, val_x), val_y),
             "probe_cifar10_acc": float("nan")}
        if kind == "supervised":
            r["source_acc"] = (predict_logits(model, val_x).argmax(1) == val_y).float().mean().item()
        if cifar:
            r["probe_cifar10_acc"] = linear_probe(features(bb, c_train.images[ci]), c_train.targets[ci],
                                                  features(bb, c_test.images[ct]), c_test.targets[ct])
        return r

    rows = [row("pretrained", load_source_model(profile, kind, "pretrained"), True)]
    swa = load_source_model(profile, kind, "swa")
    rows.append(row("swa_mean", swa, True))
    prior = load_source_prior(profile, kind, scale=1.0, eps=0.0)
    g = torch.Generator().manual_seed(seed)
    for i in range(n_samples):
        model = load_source_model(profile, kind, "swa")
        load_flat_(model.backbone, prior.sample(1, generator=g)[0])
        update_bn(model, src_x)
        rows.append(row(f"swag_sample_{i}", model, False))
    return pd.DataFrame(rows)
