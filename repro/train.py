"""Training loops shared by every notebook: seeded, resumable from atomic checkpoints, NaN-safe.

A loop is (model, loss on a batch, batches per epoch, optimizer, per-step schedule); after each epoch
the full state (model, optimizer, epoch, RNG) is written atomically, so an interrupted run resumes at
the last finished epoch and gives the result an uninterrupted run gives.
"""
from __future__ import annotations

import math
import os
import random
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .models import EVAL_BATCH_SIZE, for_evaluation
from .files import atomic_torch_save


class DivergenceError(RuntimeError):
    """The loss or the parameters became NaN/Inf: the run stops and records this reason (a seeded run diverges again
    when re-run: a worker retries a failure once, at its next start)."""


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch; single-threaded CPU kernels are deterministic for a seed."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def flat_params(module: nn.Module) -> Tensor:
    """The module's trainable parameters as one detached flat vector (the priors' order)."""
    return torch.cat([p.detach().reshape(-1) for p in module.parameters() if p.requires_grad])


@torch.no_grad()
def load_flat_(module: nn.Module, theta: Tensor) -> None:
    """Write a flat vector back into the module's trainable parameters."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p, v in zip(params, theta.split([p.numel() for p in params])):
        p.copy_(v.view_as(p))


def resolve_device(device: str | torch.device, profile: str | None = None) -> torch.device:
    """``device`` as a torch.device; one clear RuntimeError when it asks for CUDA and there is no GPU."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        who = f"profile {profile!r}" if profile else "this run"
        raise RuntimeError(
            f"{who} asks for device {str(device)!r}, but no GPU is available (torch.cuda.is_available() is "
            f"False): the paper profile needs a GPU (ResNet-50/101 at 224 px on ImageNet). For a structural "
            f"run on CPU, override the knob: get_profile('paper', device='cpu').")
    return device


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's parameters (CPU for a model without parameters)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def to_device(batch, device: torch.device):
    """A tensor, or a tuple/list of tensors (and other items), on ``device``.

    Returns ``batch`` itself when every tensor is already there (so CPU training is untouched);
    copies are ``non_blocking`` (asynchronous from pinned memory).
    """
    if isinstance(batch, Tensor):
        return batch if batch.device == device else batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)) and any(isinstance(b, Tensor) and b.device != device for b in batch):
        return type(batch)(to_device(b, device) for b in batch)
    return batch


def check_finite(loss: Tensor, what: str = "loss") -> None:
    if not torch.isfinite(loss):
        raise DivergenceError(f"{what} became {loss.item()} (non-finite)")


def fit(model: nn.Module, loss_fn: Callable[[nn.Module, tuple], Tensor],
        epoch_batches: Callable[[int], Iterable[tuple]], optimizer: torch.optim.Optimizer, epochs: int,
        lr_at: Callable[[int], float] | None = None, checkpoint: str | os.PathLike | None = None,
        on_step: Callable[[int], None] | None = None, desc: str = "train",
        extra_state: dict | None = None, on_epoch: Callable[[int], None] | None = None) -> dict:
    """Train for ``epochs``, resuming from ``checkpoint`` if it exists. Returns {'loss': [...per epoch]}.

    ``epoch_batches(epoch)`` yields the batches of one epoch (seed them by epoch for determinism);
    ``lr_at(global_step)`` sets the learning rate before every step; ``on_step(global_step)`` runs after it;
    ``on_epoch(epochs_done)`` runs after each epoch, before its checkpoint is written (so a resumed run never
    skips it).
    ``extra_state`` maps names to objects with ``state_dict``/``load_state_dict`` (e.g. a SWAG collector)
    checkpointed alongside the model. Batches are moved to the model's device (see :func:`to_device`).
    """
    extra_state = extra_state or {}
    history: list[float] = []
    start = step = 0
    path = Path(checkpoint) if checkpoint else None
    if path and path.exists():
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, step, history = state["epoch"], state["step"], list(state["history"])
        torch.set_rng_state(state["torch_rng"])
        for name, obj in extra_state.items():
            obj.load_state_dict(state["extra"][name])
    device = model_device(model)
    model.train()
    for epoch in tqdm(range(start, epochs), desc=desc, initial=start, total=epochs, leave=False):
        total, count = 0.0, 0
        for batch in epoch_batches(epoch):
            batch = to_device(batch, device)
            if lr_at is not None:
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model, batch)
            check_finite(loss)
            loss.backward()
            optimizer.step()
            if on_step is not None:
                on_step(step)
            total, count, step = total + loss.item(), count + 1, step + 1
        history.append(total / max(count, 1))
        if on_epoch is not None:
            on_epoch(epoch + 1)
        if path:
            atomic_torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                               "epoch": epoch + 1, "step": step, "history": history, "torch_rng": torch.get_rng_state(),
                               "extra": {k: v.state_dict() for k, v in extra_state.items()}}, path)
    return {"loss": history}


def one_cycle(total_steps: int, peak_lr: float, warmup: float = 0.15) -> Callable[[int], float]:
    """Linear warm-up to ``peak_lr`` then cosine decay to 0 (a one-cycle schedule)."""
    up = max(1, int(warmup * total_steps))

    def lr_at(step: int) -> float:
        if step < up:
            return peak_lr * (step + 1) / up
        return 0.5 * peak_lr * (1 + math.cos(math.pi * min(1.0, (step - up) / max(1, total_steps - up))))
    return lr_at


def cross_entropy_loss(model: nn.Module, batch: tuple) -> Tensor:
    x, y = batch
    return nn.functional.cross_entropy(model(x), y)


@torch.inference_mode()
def predict_logits(model: nn.Module, images: Tensor, batch_size: int = EVAL_BATCH_SIZE) -> Tensor:
    """Logits in eval mode, batched, without autograd; computed on the model's device, returned on the images'."""
    net, device = for_evaluation(model), model_device(model)     # an eval-mode copy: BN folded, channels-last
    out = torch.cat([net(to_device(images[i:i + batch_size], device)) for i in range(0, len(images), batch_size)])
    return to_device(out, images.device)


@torch.inference_mode()
def features(backbone: nn.Module, images: Tensor, batch_size: int = EVAL_BATCH_SIZE) -> Tensor:
    """Backbone features of ``images`` in eval mode."""
    return predict_logits(backbone, images, batch_size)


@torch.no_grad()
def update_bn(model: nn.Module, images: Tensor, batch_size: int = 256, max_batches: int = 20) -> None:
    """Recompute BatchNorm running statistics (needed after parameters were sampled, e.g. from SWAG)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None                                    # cumulative average over the batches
    was_training = model.training
    model.train()
    device = model_device(model)
    for i in range(0, min(len(images), batch_size * max_batches), batch_size):
        model(to_device(images[i:i + batch_size], device))
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    model.train(was_training)


def fit_linear_head(feats: Tensor, labels: Tensor, num_classes: int | None = None,
                    weight_decay: float = 1e-4, steps: int = 100) -> nn.Linear:
    """Multinomial logistic regression on frozen features (full-batch L-BFGS), as an ``nn.Linear``.

    Features are standardised for conditioning; the standardisation is folded back into the weights,
    so the returned head applies to raw features.
    """
    mu, sd = feats.mean(0), feats.std(0) + 1e-6
    x = (feats - mu) / sd
    num_classes = num_classes or int(labels.max()) + 1
    head = nn.Linear(x.shape[1], num_classes)
    opt = torch.optim.LBFGS(head.parameters(), lr=1, max_iter=steps, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(head(x), labels) + weight_decay * head.weight.square().sum()
        loss.backward()
        return loss
    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        head.bias -= head.weight @ (mu / sd)
        head.weight /= sd
    return head


def linear_probe(train_feats: Tensor, train_y: Tensor, test_feats: Tensor, test_y: Tensor,
                 weight_decay: float = 1e-4, steps: int = 100) -> float:
    """Test accuracy of a linear probe (see :func:`fit_linear_head`)."""
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    head = fit_linear_head(train_feats, train_y, num_classes, weight_decay, steps)
    with torch.no_grad():
        return (head(test_feats).argmax(1) == test_y).float().mean().item()
