"""ImageNet-pre-trained weights for the ``paper`` profile's source models: ResNet-50/101 backbones and classifiers.

The paper does not pre-train on ImageNet itself; it starts from released weights, which this module turns
into this package's models (:class:`~repro.models.TorchvisionBackbone`, :class:`~repro.models.Classifier`):

* **supervised**: torchvision's pre-trained ResNet-50/101 (``IMAGENET1K_V1``, the original torchvision
  weights, 76.1 % / 77.4 % top-1), see :func:`torchvision_weights`, :func:`load_supervised_backbone`,
  :func:`load_supervised_classifier` (with the original 1000-way ``fc`` as head);
* **SSL**: a SimCLR ResNet-50 checkpoint converted to PyTorch (path in ``$REPRO_SIMCLR_CHECKPOINT``, see
  :func:`simclr_checkpoint`), mapped onto torchvision's key names by :func:`simclr_to_torchvision` and
  loaded by :func:`load_simclr_backbone`.

SWAG is then fitted around those weights on ImageNet (:mod:`repro.data.imagenet`; the pipeline is
:func:`repro.experiments.pretrain.prepare`). Nothing here downloads anything until a function that needs the
network (``load_supervised_backbone``, ``load_supervised_classifier``) is called. Not re-exported by
:mod:`repro.models` (this module imports from it).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from . import Classifier, TorchvisionBackbone

ARCHS = ("resnet50", "resnet101")
# Where the SimCLR checkpoint is found (no official PyTorch release exists to download).
SIMCLR_CHECKPOINT_ENV = "REPRO_SIMCLR_CHECKPOINT"

# Wrappers seen around a ResNet-50's own keys in released checkpoints, stripped wherever they lead a key:
# DataParallel / DDP (``module.``), Lightning and solo-learn (``model.``, ``backbone.``), torch.compile
# (``_orig_mod.``), SimCLR conversions and wrappers (``convnet.``, ``encoder.``, ``base_model.``,
# ``resnet.``) and this package's own TorchvisionBackbone (``net.``).
WRAPPER_PREFIXES = ("module", "model", "_orig_mod", "backbone", "convnet", "encoder", "base_model", "resnet", "net")
# Top-level modules that are not part of the backbone and are dropped: the supervised fc, SimCLR
# projection heads under their usual names, solo-learn's online linear probe (``classifier``).
HEAD_MODULES = ("fc", "projector", "head", "contrast_head", "projection_head", "classifier")
# Keys a checkpoint may wrap its state dict in (Lightning/solo-learn: state_dict; SimCLRv2 converters: resnet).
CONTAINER_KEYS = ("state_dict", "resnet", "model_state_dict", "model")


def torchvision_weights(arch: str) -> str:
    """Name of the torchvision weights the paper used for ``arch``: ``ResNet50_Weights.IMAGENET1K_V1`` or
    ``ResNet101_Weights.IMAGENET1K_V1``.

    The paper's supervised prior is built around torchvision's pre-trained ResNet-50 / ResNet-101;
    ``IMAGENET1K_V1`` is the original release of those weights (the later ``V2`` recipe did not exist
    when the authors' code was written, and their code uses ``pretrained=True``, which means ``V1``).
    """
    if arch not in ARCHS:
        raise ValueError(f"no ImageNet weights for {arch!r}; valid architectures: {', '.join(ARCHS)}")
    return {"resnet50": "ResNet50_Weights.IMAGENET1K_V1", "resnet101": "ResNet101_Weights.IMAGENET1K_V1"}[arch]


def load_supervised_backbone(arch: str = "resnet50") -> TorchvisionBackbone:
    """torchvision's ImageNet-pre-trained ``arch`` as a backbone (downloads the weights on first use)."""
    return TorchvisionBackbone(arch, weights=torchvision_weights(arch))


def load_supervised_classifier(arch: str = "resnet50") -> Classifier:
    """torchvision's ImageNet-pre-trained ``arch`` as a :class:`~repro.models.Classifier`: the backbone plus
    torchvision's original 1000-way ``fc`` as the head (downloads the weights on first use).

    This is the supervised source model whose SWAG posterior gives the paper's supervised prior.
    """
    from torchvision.models import get_weight
    state = get_weight(torchvision_weights(arch)).get_state_dict(progress=True)
    backbone = TorchvisionBackbone(arch)
    backbone.net.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")})  # strict
    model = Classifier(backbone, state["fc.weight"].shape[0])
    model.head.load_state_dict({"weight": state["fc.weight"], "bias": state["fc.bias"]})
    return model


def simclr_checkpoint() -> Path:
    """The SimCLR ResNet-50 checkpoint named by ``$REPRO_SIMCLR_CHECKPOINT``; FileNotFoundError when unset or missing."""
    value = os.environ.get(SIMCLR_CHECKPOINT_ENV)
    how = (f"set {SIMCLR_CHECKPOINT_ENV} to a PyTorch conversion of the official SimCLR ResNet-50 (1x) "
           f"checkpoint (e.g. from tonylins/simclr-converter); see repro.models.pretrained.simclr_to_torchvision")
    if not value:
        raise FileNotFoundError(f"the SSL prior of the paper profile needs a SimCLR checkpoint, but "
                                f"{SIMCLR_CHECKPOINT_ENV} is not set: {how}")
    path = Path(value).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{SIMCLR_CHECKPOINT_ENV}={value!r} does not name an existing file: {how}")
    return path


def _unwrap(obj) -> Mapping[str, Tensor]:
    """The state dict inside a checkpoint: descend through container keys until tensors appear."""
    while isinstance(obj, Mapping) and not any(isinstance(v, Tensor) for v in obj.values()):
        key = next((k for k in CONTAINER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if key is None:
            raise ValueError(f"no state dict found in the checkpoint: top-level keys {sorted(map(str, obj))[:10]}, "
                             f"none of them a tensor or one of {CONTAINER_KEYS}")
        obj = obj[key]
    if not isinstance(obj, Mapping):
        raise ValueError(f"expected a state dict (a mapping of names to tensors), got {type(obj).__name__}")
    return obj


def _strip(key: str) -> str:
    parts = key.split(".")
    while len(parts) > 1 and parts[0] in WRAPPER_PREFIXES:
        parts = parts[1:]
    return ".".join(parts)


def _resnet50_backbone_shapes() -> dict[str, tuple[int, ...]]:
    """Key -> shape of torchvision resnet50's state dict without ``fc``, built on the meta device (no memory)."""
    import torchvision
    with torch.device("meta"):
        net = torchvision.models.resnet50()
    return {k: tuple(v.shape) for k, v in net.state_dict().items() if not k.startswith("fc.")}


def simclr_to_torchvision(state_dict) -> dict[str, Tensor]:
    """Map a SimCLR ResNet-50 checkpoint to torchvision ``resnet50`` key names (without ``fc``).

    Accepts a raw state dict or a checkpoint wrapping one under ``state_dict`` / ``resnet`` /
    ``model_state_dict`` / ``model`` (nested wrappers too). Supported key layouts:

    * PyTorch conversions of the official SimCLR v1/v2 TensorFlow checkpoints whose ResNet mirrors
      torchvision's module names (the ``resnet50x1`` class of tonylins/simclr-converter, which is also what
      the paper's authors load into): plain ``conv1.weight`` or prefixed ``convnet.`` / ``encoder.``;
    * solo-learn / Lightning checkpoints: ``backbone.conv1.weight``, optionally under ``model.`` or ``module.``;
    * plain torchvision keys, and this package's ``TorchvisionBackbone`` (``net.``) / ``SimCLR`` models.

    Projection heads and classifiers (top-level ``fc``, ``projector``, ``head``, ``contrast_head``,
    ``projection_head``, ``classifier``, after prefixes are stripped) are dropped. Converters whose
    ResNet class uses other module names are not mapped and fail the check below
    (convert those into a torchvision ``resnet50`` first). Missing BatchNorm ``num_batches_tracked`` counters are allowed (torch fills
    them in on loading). Tensors are returned as they are, not copied.

    Raises one ValueError listing missing, unexpected, duplicated and wrongly-shaped keys when the
    result is not exactly torchvision resnet50's backbone.
    """
    src = _unwrap(state_dict)
    out: dict[str, Tensor] = {}
    origin: dict[str, str] = {}
    duplicated = []
    for key, value in src.items():
        name = _strip(str(key))
        if name.split(".")[0] in HEAD_MODULES:
            continue
        if name in out:
            duplicated.append(f"{origin[name]} / {key}")
            continue
        out[name], origin[name] = value, str(key)

    want = _resnet50_backbone_shapes()
    missing = [k for k in want if k not in out and not k.endswith("num_batches_tracked")]
    unexpected = [origin[k] for k in out if k not in want]
    shapes = [f"{origin[k]}: {tuple(v.shape)} vs {want[k]}" for k, v in out.items()
              if k in want and tuple(v.shape) != want[k]]
    if missing or unexpected or duplicated or shapes:
        def few(items):
            return ", ".join(items[:5]) + (", ..." if len(items) > 5 else "")
        problems = [f"{label} ({len(items)}): {few(items)}" for label, items in
                    (("missing keys", missing), ("unexpected keys", unexpected),
                     ("keys mapping to the same name", duplicated), ("shape mismatches", shapes)) if items]
        raise ValueError("checkpoint does not map onto a torchvision resnet50 backbone; " + "; ".join(problems))
    return out


def load_simclr_backbone(path: str | os.PathLike) -> TorchvisionBackbone:
    """A ResNet-50 backbone with the weights of the SimCLR checkpoint at ``path`` (see simclr_to_torchvision)."""
    backbone = TorchvisionBackbone("resnet50")
    state = simclr_to_torchvision(torch.load(path, map_location="cpu", weights_only=True))
    backbone.net.load_state_dict(state)   # fc is an Identity there: exactly the backbone keys, strict
    return backbone
