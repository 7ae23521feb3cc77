"""Datasets of the study: loading, on-disk decode cache, subsets, augmentation, downloads.

Everything returned is ``uint8`` N x C x H x W; augmentation works on these tensors
(torchvision.transforms.v2), normalisation is the model's job. The pipeline, one concept per module:

* :mod:`repro.data.formats`: the dataset registry (:data:`DATASETS`, class names, :class:`Split`),
  :func:`data_dir`, the readers of the stored formats (:func:`load`, :func:`available`) and :func:`pack_npz`;
* :mod:`repro.data.cache`: the on-disk cache of decoded images (:func:`cache_dir`);
* :mod:`repro.data.subsets`: class-balanced subsets and splits, minibatches (:func:`batches`, :class:`SplitDataset`);
* :mod:`repro.data.transforms`: augmentation and resizing (:func:`train_transform`, :func:`as_rgb`, ...);
* :mod:`repro.data.downloads`: fetching the datasets from their public sources (:func:`download`);
  the command line ``python -m repro.data download NAME|all`` is :mod:`repro.data.__main__`;
* :mod:`repro.data.checksums`: the SHA-256 of every file the study reads, and the checks against them
  (``python -m repro.data verify``);
* :mod:`repro.data.shift`: the distribution-shift test sets (corruptions, CIFAR-10.1);
* :mod:`repro.data.imagenet`: ImageNet-1k read from its official archives (paper profile's source);
* :mod:`repro.data.voc`: Pascal VOC 2012 segmentation (paper profile's downstream task).

The names below are re-exported so that ``from repro import data; data.load(...)`` works.
"""
from __future__ import annotations

from .cache import cache_dir
from .downloads import download
from .formats import (
    CAMVID_CLASSES,
    CAMVID_IGNORE,
    CIFAR10_CLASSES,
    DATASETS,
    FASHION_MNIST_CLASSES,
    DatasetInfo,
    Split,
    available,
    clear_memory_cache,
    data_dir,
    load,
    pack_encoded,
    pack_npz,
)
from .subsets import SplitDataset, augmented, batches, stratified_subset, train_val_split
from .transforms import as_rgb, resize_segmentation, segmentation_transform, train_transform

__all__ = [
    "DATASETS", "DatasetInfo", "Split", "data_dir", "cache_dir", "load", "clear_memory_cache",
    "stratified_subset", "train_val_split", "train_transform", "as_rgb", "resize_segmentation",
    "batches", "augmented", "SplitDataset", "pack_npz", "pack_encoded", "download",
    "available", "segmentation_transform",
    "CIFAR10_CLASSES", "FASHION_MNIST_CLASSES", "CAMVID_CLASSES", "CAMVID_IGNORE",
]
