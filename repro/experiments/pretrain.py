"""The source task (paper step i): pre-train a backbone, then fit SWAG around it and save the prior.

Two kinds, as in the paper: ``supervised`` (cross-entropy) and ``ssl`` (SimCLR / NT-Xent; the primary). SWAG is
collected on the *same* loss, over the whole model; the prior is its marginal over the backbone. Every stage resumes
from its checkpoint and is skipped when its artifact exists (a missing one raises :func:`missing`'s error).

Two sources, one pipeline (:func:`prepare`; the model, batches and pre-training differ: :func:`_tiny_source`, ...):

* ``smoke`` / ``cpu``: Tiny-ImageNet-32, the backbone pre-trained here from scratch;
* ``paper``: ImageNet at 224 px and released weights, no pre-training (as the paper): torchvision's ResNet-50/101
  with its 1000-way ``fc`` (supervised), or a SimCLR ResNet-50 checkpoint (``$REPRO_SIMCLR_CHECKPOINT``, SSL). Needs
  a GPU (``profile.device == 'cuda'``) and the ImageNet files in ``<data dir>/imagenet``.

Three kinds of prior on the cpu/smoke profiles: ``supervised``, ``ssl``, and ``supervised_matched`` (claim C5): the
supervised backbone at the pre-training epoch whose CIFAR-10 linear probe is closest to the final SSL backbone's
(:mod:`.source_quality` picks the epoch; the per-epoch states are saved during pre-training), with its own SWAG.

SWAG protocol (version 3, notebook 01 says why): ``profile.swag_burnin_epochs`` at the constant SWAG lr, then
``profile.swag_epochs`` of collection; each prior stores its protocol hash, which downstream runs are keyed on.
In ``results/<profile>/priors/``: ``{kind}_pretrained.pt``, ``{kind}_swa.pt`` (the SWAG mean, BatchNorm statistics
recomputed on augmented training images as SWA's ``bn_update``), ``{kind}_prior.pt`` (mean, diagonal, float16
deviations), ``epochs/{kind}/epoch_NNN.pt`` (the state after every pre-training epoch: the probes by epoch, C5).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import Tensor, nn

from .. import data
from ..data import imagenet
from ..files import atomic_torch_save
from ..method.prior_files import load_prior, prior_meta, unusable
from ..method.priors import parameter_layout
from ..models import Classifier, build_backbone, pretrained
from ..profiles import Profile, results_dir
from ..runner import MissingPrerequisite
from .ssl import SimCLR, nt_xent, simclr_augment, simclr_loss
from ..method.swag import fit_swag
from ..train import (cross_entropy_loss, fit, flat_params, load_flat_, one_cycle, resolve_device, seed_everything,
                    update_bn)

MATCHED, PRIMARY = "supervised_matched", "ssl"
KINDS = ("supervised", "ssl", MATCHED)                           # every kind, in the order notebook 01 fits them
STUDIED_KINDS = (PRIMARY, *(k for k in KINDS if k != PRIMARY))   # the order the transfer studies run them in
PROTOCOL_VERSION = 3        # of the SWAG fitting protocol (module docstring); part of every prior's protocol hash
# Hyperparameters of the source task, recorded in every prior file (``supervised_matched`` uses ``supervised``'s).
HYPERPARAMETERS = {
    "supervised": dict(peak_lr=0.1, momentum=0.9, weight_decay=5e-4, label_smoothing=0.0),
    "ssl": dict(peak_lr=0.2, momentum=0.9, weight_decay=5e-4, nt_xent_temperature=0.5),
}
# SWAG learning rates, tried in this order until the SWA mean is at least as good as the checkpoint
# (repro.experiments.source_quality.fit_stationary); the lr a prior was fitted at is in its protocol.
SWAG_LRS = (0.01, 0.003, 0.001)
UNHASHED = "v1"                       # the protocol of a prior fitted before protocols were hashed
PROJECTOR_EPOCHS = 1                  # epochs fitting the SimCLR projector on the frozen released backbone (paper)
BN_BATCHES, BN_SEED = 20, 7           # batches of augmented training images BatchNorm statistics are recomputed on


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


def base_kind(kind: str) -> str:
    """The pre-training loss of ``kind``: the quality-matched prior is a supervised backbone."""
    return "supervised" if check_kind(kind) == MATCHED else kind


def source_kinds(profile: Profile) -> tuple[str, ...]:
    """The kinds a profile fits: the quality-matched prior needs a backbone pre-trained here, epoch by epoch, so the
    paper profile (released weights) has ``supervised`` and ``ssl`` only."""
    return KINDS if profile.source_dataset != "imagenet" else KINDS[:2]


def epoch_state(profile: Profile, kind: str, epoch: int) -> Path:
    """Where pre-training saves the model state after ``epoch`` epochs (1-based)."""
    return results_dir(profile) / "priors" / "epochs" / check_kind(kind) / f"epoch_{epoch:03d}.pt"


def protocol_hash(protocol: dict) -> str:
    """12 hex digits of the sha1 of the protocol's canonical JSON: the identity of a prior's fitting protocol."""
    canonical = json.dumps(protocol, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(canonical.encode()).hexdigest()[:12]


@functools.lru_cache(maxsize=16)
def _stored_protocol(path: Path, inode: int, mtime_ns: int) -> str:      # a rewritten (renamed-over) file: new inode
    return prior_meta(path).get("protocol_hash", UNHASHED)


def prior_protocol(profile: Profile, kind: str) -> str:
    """The protocol hash stored in the ``kind`` prior of ``profile`` (what downstream runs are keyed on)."""
    path = artifacts(profile, kind).prior
    if not path.exists():
        raise missing(path, profile)
    stat = path.stat()
    return _stored_protocol(path, stat.st_ino, stat.st_mtime_ns)


def missing(path: Path, profile: Profile, reason: str | None = None) -> MissingPrerequisite:
    """The error for an artifact of notebook 01 that is not there (or, with ``reason``, not usable), naming the command
    that builds it again (notebook 01 sets an unusable prior aside and fits it again)."""
    return MissingPrerequisite(reason or f"{path} does not exist (run notebook 01)",
                               f"python -m repro.reproduce --profile {profile.name} --claims C1")


def require_priors(profile: Profile) -> None:
    """Raise :class:`MissingPrerequisite` unless the prior of every kind the profile fits is on disk and loads."""
    for kind in source_kinds(profile):
        path = artifacts(profile, kind).prior
        if not path.exists() or (reason := unusable(path)):
            raise missing(path, profile, None if not path.exists() else reason)


def check_protocol(profile: Profile, kind: str, expected: str) -> None:
    """One clear error when the prior on disk is not the one a run was keyed on."""
    found = prior_protocol(profile, kind)
    if found != expected:
        raise ValueError(f"the {kind!r} prior on disk has protocol {found}, but this run was keyed on {expected}: "
                         f"it belongs to another prior and is not re-run with this one")


def artifacts(profile: Profile, kind: str) -> SourceArtifacts:
    folder = results_dir(profile) / "priors"
    return SourceArtifacts(check_kind(kind), folder / f"{kind}_pretrained.pt", folder / f"{kind}_swa.pt",
                           folder / f"{kind}_prior.pt")


def source_splits(profile: Profile) -> tuple[data.Split, torch.Tensor, torch.Tensor, data.Split, torch.Tensor]:
    """(train split, train indices, train labels, val split, val indices) of the profile's source subset."""
    train, val = data.load(profile.source_dataset, "train"), data.load(profile.source_dataset, "val")
    tr = data.stratified_subset(train.targets, profile.source_train_n or len(train), seed=0)
    va = data.stratified_subset(val.targets, profile.source_val_n or len(val), seed=0)
    return train, tr, train.targets[tr], val, va


def source_num_classes(profile: Profile) -> int:
    return (imagenet.NUM_CLASSES if profile.source_dataset == "imagenet"
            else data.DATASETS[profile.source_dataset].num_classes)


def build_source_model(profile: Profile, kind: str, num_classes: int) -> nn.Module:
    """The source model's architecture (randomly initialised; the paper profile's weights come from
    :func:`_imagenet_source` / the saved artifacts)."""
    backbone = build_backbone(profile.model, width=profile.width)
    return Classifier(backbone, num_classes) if base_kind(kind) == "supervised" else SimCLR(backbone)


def _source_loss(kind: str) -> Callable[[nn.Module, tuple], Tensor]:
    """The loss of the source task: pre-training and SWAG collection use the same one."""
    if base_kind(kind) == "supervised":
        return cross_entropy_loss
    T = HYPERPARAMETERS["ssl"]["nt_xent_temperature"]
    return lambda model, batch: simclr_loss(model, batch, T)


def _frozen_backbone_simclr_loss(model: nn.Module, batch: tuple) -> Tensor:
    """NT-Xent with the backbone frozen (eval mode, no gradient): fits the projection head only."""
    views, _ = batch
    model.backbone.eval()                  # BatchNorm running statistics stay the released ones
    with torch.no_grad():
        h = model.backbone(views.flatten(0, 1))
    z = model.projector(h).unflatten(0, (len(views), 2))
    return nt_xent(z[:, 0], z[:, 1], HYPERPARAMETERS["ssl"]["nt_xent_temperature"])


def _optimizer(params: Iterable[nn.Parameter], hp: dict) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=hp["peak_lr"], momentum=hp["momentum"],
                           weight_decay=hp["weight_decay"], nesterov=True)


def stale_fields(profile: Profile, kind: str, meta: dict, from_epoch: int | None = None,
                 swag_lr: float | None = None) -> list[str]:
    """What differs between a stored prior's protocol (its ``meta``) and the one ``prepare`` would fit now."""
    expected = {"version": PROTOCOL_VERSION, "model": profile.model, "width": profile.width,
                "epochs": {"supervised": profile.source_epochs, "ssl": profile.ssl_epochs, MATCHED: 0}[kind],
                "swag_burnin_epochs": profile.swag_burnin_epochs, "swag_epochs": profile.swag_epochs,
                "swag_snapshots": profile.swag_snapshots, "swag_max_rank": profile.swag_max_rank,
                "batch_size": profile.batch_size, **HYPERPARAMETERS[base_kind(kind)]}
    for key, value in (("from_epoch", from_epoch), ("swag_lr", swag_lr)):
        if value is not None:
            expected[key] = value
    return [f"{k}: stored {meta.get(k, 'none')}, now {v}" for k, v in expected.items() if meta.get(k) != v]


@dataclass
class _Source:
    """What differs between source datasets; :func:`prepare` does the rest (pre-training stage, SWAG, saving)."""
    model: nn.Module                                  # initialised (seeded) source model, on the device
    epoch_batches: Callable[[int], Iterable[tuple]]   # the batches of epoch e, seeded by e (full batches only)
    steps_per_epoch: int
    bn_images: Callable[[], Tensor]                   # images for the BatchNorm recomputation (bn_images)
    pretrain_params: list[nn.Parameter]               # what the pre-training stage trains ...
    pretrain_epochs: int                              # ... for this many epochs (0: nothing to train)
    pretrain_loss: Callable[[nn.Module, tuple], Tensor]
    pretrain_desc: str
    meta: dict = field(default_factory=dict)          # source-specific entries of the prior's meta


def _tiny_source(profile: Profile, kind: str, seed: int, device: torch.device) -> _Source:
    """Tiny-ImageNet-32 (smoke / cpu): in-memory batches, backbone pre-trained here from scratch."""
    train, idx, labels, _, _ = source_splits(profile)
    images = train.images[idx]
    transform = (data.train_transform(profile.source_dataset, profile.image_size) if base_kind(kind) == "supervised"
                 else simclr_augment(profile.image_size))

    def epoch_batches(epoch: int):
        return data.batches(images, labels, profile.batch_size, shuffle=True, seed=seed * 1000 + epoch,
                            transform=transform, drop_last=True)

    seed_everything(seed)
    model = build_source_model(profile, kind, train.num_classes).to(device)
    # the quality-matched prior trains nothing: its state is an epoch of the supervised pre-training
    epochs = {"supervised": profile.source_epochs, "ssl": profile.ssl_epochs, MATCHED: 0}[kind]
    return _Source(model, epoch_batches, len(images) // profile.batch_size,
                   bn_images=lambda: bn_images(profile, images),
                   pretrain_params=list(model.parameters()), pretrain_epochs=epochs, pretrain_loss=_source_loss(kind),
                   pretrain_desc=f"pre-train {kind}", meta={"source_train_n": len(images), "epochs": epochs})


def bn_images(profile: Profile, images: Tensor) -> Tensor:
    """``BN_BATCHES`` batches of ``images``, crop + flip, a fixed draw: where source models' BatchNorm statistics are
    re-estimated (the SWA mean; every state notebook 01 scores)."""
    transform = data.train_transform(profile.source_dataset, profile.image_size)
    return data.augmented(images[: profile.batch_size * BN_BATCHES], transform, seed=BN_SEED)


def _loader_workers() -> int:
    return os.cpu_count() or 0


def _imagenet_source(profile: Profile, kind: str, seed: int, device: torch.device) -> _Source:
    """ImageNet (paper): released weights, no pre-training; batches from a DataLoader over the train split.

    * supervised: torchvision's ``profile.model`` (ResNet-50/101, ``IMAGENET1K_V1``) with its original
      1000-way ``fc`` as the head (:func:`repro.models.pretrained.load_supervised_classifier`);
    * ssl: ``SimCLR(load_simclr_backbone($REPRO_SIMCLR_CHECKPOINT))``. **Necessary deviation**: the released
      SimCLR v1 PyTorch conversions carry no projection head, but SWAG runs on the SimCLR loss, which needs
      one; so a fresh projector is first fitted for ``PROJECTOR_EPOCHS`` epoch(s) with the backbone frozen
      (eval mode: its BatchNorm statistics stay the released ones; SGD over the projector only, one-cycle
      at the SSL ``peak_lr``). That is the ``pretrained`` stage of this source; SWAG then runs on the SimCLR
      loss over the whole model, as for the cpu profile. The views are :class:`repro.data.imagenet.SimCLRViews`
      (the CPU pipeline at 224 px plus SimCLR's ImageNet blur).
    """
    if kind == "ssl":
        checkpoint = pretrained.simclr_checkpoint()
        if profile.model == "resnet101":
            raise ValueError("the SimCLR authors released no ResNet-101: the paper's SSL prior is ResNet-50 only; "
                             "use get_profile('paper', model='resnet50') for kind 'ssl'")
    root, size, bs = data.data_dir() / "imagenet", profile.image_size, profile.batch_size
    transform = imagenet.SimCLRViews(size) if kind == "ssl" else imagenet.imagenet_transform(True, size)
    train = imagenet.imagenet_split(root, "train", image_size=size, transform=transform)
    steps = len(train) // bs
    if steps == 0:
        raise ValueError(f"ImageNet train split in {root} has {len(train)} images, fewer than one batch of {bs}")
    workers, pin = _loader_workers(), device.type == "cuda"

    def epoch_batches(epoch: int):
        return torch.utils.data.DataLoader(
            train, batch_size=bs, shuffle=True, drop_last=True, num_workers=workers, pin_memory=pin,
            generator=torch.Generator().manual_seed(seed * 1000 + epoch))   # order and worker seeds

    def bn_images() -> Tensor:   # augmented (RandomResizedCrop + flip), as SWA's bn_update over the train loader
        augmented = imagenet.imagenet_split(root, "train", image_size=size)
        idx = torch.randperm(len(augmented), generator=torch.Generator().manual_seed(seed))[: bs * BN_BATCHES]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(BN_SEED)
            return torch.cat([augmented[i][0][None] for i in idx.tolist()])

    seed_everything(seed)
    if kind == "supervised":   # nothing to pre-train: the released model already has its head
        model = pretrained.load_supervised_classifier(profile.model).to(device)
        params, epochs, loss, weights = [], 0, _source_loss(kind), "torchvision IMAGENET1K_V1"
    else:
        model = SimCLR(pretrained.load_simclr_backbone(checkpoint)).to(device)
        params, epochs, loss, weights = (list(model.projector.parameters()), PROJECTOR_EPOCHS,
                                         _frozen_backbone_simclr_loss, str(checkpoint))
    meta = {"source_train_n": len(train), "epochs": 0, "weights": weights, "projector_epochs": epochs}
    return _Source(model, epoch_batches, steps, bn_images, pretrain_params=params, pretrain_epochs=epochs,
                   pretrain_loss=loss, pretrain_desc="fit the SimCLR projector", meta=meta)


def prepare(profile: Profile, kind: str, seed: int = 0, from_epoch: int | None = None,
            swag_lr: float | None = None, stop_after_pretraining: bool = False) -> SourceArtifacts:
    """Pre-train and fit SWAG for one kind, unless its prior already exists. Returns the artifact paths.

    Pre-training saves the model state after every epoch (:func:`epoch_state`). ``supervised_matched`` starts from
    the supervised state after ``from_epoch`` epochs (chosen by :func:`repro.experiments.source_quality.matched_epoch`) instead.
    SWAG then runs ``profile.swag_burnin_epochs`` of burn-in and ``profile.swag_epochs`` of collection (a float
    below 1 means that fraction of an epoch, as the paper's quarter epoch on ImageNet) at the constant ``swag_lr``
    (default ``SWAG_LRS[0]``; an existing prior is accepted at any lr unless ``swag_lr`` is given),
    taking ``profile.swag_snapshots`` snapshots, one every ``collection steps // swag_snapshots`` steps, and records
    the norm of the backbone at every snapshot (the filter-norm drift). Everything trains on ``profile.device``.
    ``stop_after_pretraining`` returns once ``{kind}_pretrained.pt`` exists (to pre-train ahead of SWAG).
    """
    out = artifacts(profile, kind)
    if out.prior.exists():
        stale = stale_fields(profile, kind, prior_meta(out.prior), from_epoch, swag_lr)
        if stale:
            raise ValueError(f"{out.prior} was fitted under another protocol ({'; '.join(stale)}): it is kept, not "
                             f"overwritten. To refit, delete {out.prior.name} and {out.swa.name} in {out.prior.parent} "
                             f"(and {out.pretrained.name} if the pre-training knobs changed), then run notebook 01 again")
        return out
    if kind not in source_kinds(profile):
        raise ValueError(f"profile {profile.name!r} fits the kinds {', '.join(source_kinds(profile))}, not {kind!r}")
    if (kind == MATCHED) != (from_epoch is not None):
        raise ValueError(f"from_epoch is the supervised epoch the {MATCHED!r} prior starts from, and only it takes one")
    device = resolve_device(profile.device, profile.name)
    if profile.source_dataset == "imagenet":
        source = _imagenet_source
    elif profile.source_dataset in data.DATASETS:
        source = _tiny_source
    else:
        raise ValueError(f"profile {profile.name!r} has unknown source dataset {profile.source_dataset!r}; "
                         f"valid: imagenet, {', '.join(data.DATASETS)}")
    ckpt_dir = results_dir(profile) / "checkpoints"
    hp = HYPERPARAMETERS[base_kind(kind)]
    swag_lr = SWAG_LRS[0] if swag_lr is None else swag_lr
    src = source(profile, kind, seed, device)
    model, steps_per_epoch = src.model, src.steps_per_epoch
    # stage 1: the backbone (its own artifact, so it can be built ahead of SWAG; the matched one is always re-read from
    # its epoch, so a changed from_epoch can never reuse another epoch's state)
    if kind == MATCHED or not out.pretrained.exists():
        if kind == MATCHED:
            state = epoch_state(profile, "supervised", from_epoch)
            if not state.exists():
                raise FileNotFoundError(f"{state} does not exist: pre-train the supervised backbone first "
                                        f"(prepare(profile, 'supervised'))")
            model.load_state_dict(torch.load(state, map_location="cpu", weights_only=True))
        elif src.pretrain_epochs > 0:
            opt = _optimizer(src.pretrain_params, hp)
            fit(model, src.pretrain_loss, src.epoch_batches, opt, src.pretrain_epochs,
                lr_at=one_cycle(src.pretrain_epochs * steps_per_epoch, hp["peak_lr"]),
                checkpoint=ckpt_dir / f"{kind}_pretrain.ckpt", desc=src.pretrain_desc,
                on_epoch=lambda e: atomic_torch_save(model.state_dict(), epoch_state(profile, kind, e)))
        atomic_torch_save(model.state_dict(), out.pretrained)
    if stop_after_pretraining:
        return out
    model.load_state_dict(torch.load(out.pretrained, map_location="cpu", weights_only=True))

    # SWAG: burn-in, then collection, at a constant learning rate around the pre-trained solution.
    d_backbone = sum(p.numel() for p in model.backbone.parameters())    # the backbone comes first in the flat order
    start_norm = flat_params(model.backbone).norm().item()
    swag, norms = fit_swag(
        model, _source_loss(kind), lambda e: src.epoch_batches(10_000 + e), _optimizer(model.parameters(), hp),
        steps_per_epoch, swag_lr, burnin_steps=int(profile.swag_burnin_epochs * steps_per_epoch),
        collect_steps=int(profile.swag_epochs * steps_per_epoch), snapshots=profile.swag_snapshots,
        max_rank=profile.swag_max_rank, checkpoint=ckpt_dir / f"{kind}_swag_lr{swag_lr:g}.ckpt", desc=f"SWAG {kind}",
        norm_of=lambda theta: theta[:d_backbone].norm().item())

    load_flat_(model, swag.mean.float())
    update_bn(model, src.bn_images())           # augmented training images, as SWA's bn_update
    atomic_torch_save(model.state_dict(), out.swa)
    protocol = {"version": PROTOCOL_VERSION, "kind": kind, "profile": profile.name, "model": profile.model,
                "width": profile.width, "image_size": profile.image_size, "source_dataset": profile.source_dataset,
                **src.meta, "from_epoch": from_epoch, "swag_burnin_epochs": profile.swag_burnin_epochs,
                "swag_epochs": profile.swag_epochs, "swag_snapshots": profile.swag_snapshots,
                "swag_max_rank": profile.swag_max_rank, "swag_lr": swag_lr, "batch_size": profile.batch_size,
                "seed": seed, **hp}
    meta = {**protocol, "protocol_hash": protocol_hash(protocol), "start_norm": start_norm,
            "snapshot_norms": norms}
    swag.save(out.prior, layout=parameter_layout(model.backbone), meta=meta, factor_dtype=torch.float16,
              first=d_backbone)
    return out


def load_source_model(profile: Profile, kind: str, which: str = "swa") -> nn.Module:
    """The pre-trained (``which='pretrained'``) or SWA-mean (``'swa'``) source model (on the CPU)."""
    out = artifacts(profile, kind)
    path = {"pretrained": out.pretrained, "swa": out.swa}[which]
    if not path.exists():
        raise missing(path, profile)
    model = build_source_model(profile, kind, source_num_classes(profile))
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model


def load_source_prior(profile: Profile, kind: str, **kwargs):
    """The learned prior of ``kind`` (see :func:`repro.method.prior_files.load_prior` for scale, rank, ...)."""
    path = artifacts(profile, kind).prior
    if not path.exists():
        raise missing(path, profile)
    return load_prior(path, **kwargs)
