"""Every size knob of the study, in one table: ``smoke`` (CI), ``cpu`` (the reported study), ``paper``.

Notebooks take ``profile`` as a papermill parameter and read everything else from here, so the
same notebook runs in seconds on ``smoke`` and hours on ``cpu`` without a fork.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

DEFAULT_PROFILE = "cpu"


@dataclass(frozen=True)
class Profile:
    """Size knobs of one study profile (sizes are counts of images unless named otherwise)."""

    name: str
    # model
    model: str                      # a name from repro.models.BACKBONES
    width: int                      # base width of the CIFAR-style ResNet (ignored by torchvision models)
    image_size: int                 # side of the square input, in pixels
    device: str                     # "cpu" or "cuda": where the models train (cuda needs a GPU)
    # source pre-training (notebook 01)
    source_dataset: str
    source_train_n: int | None      # None = the whole split
    source_val_n: int | None
    source_epochs: int              # supervised pre-training epochs
    ssl_epochs: int                 # SimCLR pre-training epochs
    swag_burnin_epochs: float       # epochs at the SWAG learning rate before the first snapshot (stationarity)
    swag_epochs: float              # epochs of SWAG collection around the pre-trained solution (may be < 1)
    swag_snapshots: int             # snapshots taken over those epochs (>= swag_max_rank)
    swag_max_rank: int              # K: deviations kept (largest rank any notebook uses)
    batch_size: int
    probe_n: int                    # images for linear probes (source and CIFAR-10) in notebook 01
    probe_test_n: int | None        # CIFAR-10 test images the notebook-01 probe is scored on (None = all)
    # downstream (notebooks 02-08)
    downstream_test_n: int | None   # test subset size (stratified); None = the whole test split
    train_sizes: tuple[int, ...]    # downstream training-set sizes (log scale)
    fashion_sizes: tuple[int, ...]  # the sizes of the Fashion-MNIST five-way (a subset of train_sizes)
    seeds: tuple[int, ...]
    t1_seeds: tuple[int, ...]       # seeds of the sampler arms at T = 1, whose spread over seeds is large
    ranks: tuple[int, ...]          # rank ablation
    scales: tuple[float, ...]       # prior-scale (lambda) grid of the C3 scale study on the test split
    tuning_scales: tuple[float, ...]  # lambda grid the validation sweeps start from (coarser: tuning runs at every size)
    downstream_steps: tuple[tuple[int, int], ...]  # (n, steps): the step budget of an n-image run (notebook 09's
                                    # rule; see Profile.steps_for)
    budget_grid: tuple[int, ...]    # notebook 09: the doubling grid of total steps its learning curves start with
    budget_sizes: tuple[int, ...]   # notebook 09: the training-set sizes it chooses budgets at
    budget_rule: bool               # notebook 09's rule sets the step budgets (downstream_steps, segmentation_steps,
                                    # cycles, bn_refresh, sampler_steps) and the grids wait for it; False (smoke): the
                                    # budgets here stand, and notebook 09 only shows what its rule would choose
    budget_max_steps: int           # notebook 09: the grid doubles while the rule is unmet, up to this many steps;
                                    # a curve still unmet there takes it as its budget, marked not converged
    sampler_budget_sizes: tuple[int, ...]  # notebook 09's third amendment: the sizes each sampler arm's own budget
                                    # is chosen at (its curves start at the size's MAP budget, steps_for)
    sampler_budget_max_steps: int   # ... and the most steps a sampler curve doubles to (unmet there: not converged)
    sampler_steps: tuple[tuple[str, int, int], ...]  # (arm, n, steps): each sampler arm's own budget, as notebook 09
                                    # chose it (empty until then); the retuning and the re-runs train at it
    checked_steps: tuple[tuple[str, int, int], ...]  # (arm, n, steps): the test budget of each arm whose budget check
                                    # at its rule-5 values doubled past the budget it was tuned at (notebook 05's
                                    # own_budget_choices; every other arm tests at its tuning budget): a record,
                                    # checked against the runs (repro.experiments.own_budget.checked_mismatches)
    elbo_sizes: tuple[int, ...]     # notebook 10: the training-set sizes the DE-ELBO widths are compared at
    confirm_seeds: tuple[int, ...]  # notebook 10's confirmatory E1: seeds no other run of the profile uses
    downstream_batch_size: int
    compile: bool                   # downstream training's loss compiled by torch.compile, once per process and
                                    # model shape (eager where compile is unavailable): repro.compute
    study_n: int                    # training-set size of tuning and of the rank and scale studies
    lr_grid: tuple[float, ...]      # learning rates tried on the validation split
    factor_grid: tuple[float, ...]  # multipliers of weight decay, head variance and alpha tried on validation
    cycles: int                     # cyclical SG-MCMC cycles, the first of them burn-in (no samples kept)
    bma_samples: int                # samples kept for the Bayesian model average (spread over the other cycles)
    bn_refresh: bool                # a transfer sampler run re-estimates BatchNorm statistics per sample (notebook
                                    # 09's rule 5)
    temperatures: tuple[float, ...] # temperature ablation of Bayes + learned prior (1 = true posterior, 0 = no noise)
    cold_temperatures: tuple[float, ...]  # the cold regime's T is chosen on validation from these (authors: T ~ 4e-8)
    tuning_seeds: int               # seeds whose mean validation accuracy picks each hyperparameter
    val_fraction: float             # held-out share of the downstream training data for tuning
    geometry_random_directions: int
    geometry_top_directions: int
    geometry_points: int            # points on the t grid of each 1-D loss slice
    geometry_test_n: int            # CIFAR-10 test images the slice losses are computed on
    geometry_bn_n: int              # CIFAR-10 training images BatchNorm statistics are re-estimated on along a slice
    segmentation_dataset: str       # "camvid" (Cityscapes / VOC stand-in) or "voc" (Pascal VOC 2012, paper profile)
    segmentation_size: tuple[int, int]  # (height, width) the segmentation images are resized to
    segmentation_steps: int         # SGD / SGLD steps of one segmentation run
    segmentation_batch_size: int
    decoder_channels: int           # width of the DeepLabv3+ ASPP and decoder
    aspp_rates: tuple[int, int, int]  # atrous rates of the three dilated ASPP branches

    def steps_for(self, n: int) -> int:
        """The step budget of a downstream run on ``n`` training images: that of the smallest size in
        ``downstream_steps`` at or above ``n`` (the largest size's beyond it). Budgets grow with n, so a size
        between two measured ones is never given fewer steps than it needs."""
        for size, steps in sorted(self.downstream_steps):
            if n <= size:
                return steps
        return max(self.downstream_steps)[1]


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            name="smoke", model="resnet8", width=8, image_size=32, device="cpu",
            source_dataset="tinyimagenet32", source_train_n=600, source_val_n=200,
            source_epochs=2, ssl_epochs=2, swag_burnin_epochs=1, swag_epochs=1, swag_snapshots=6, swag_max_rank=5, batch_size=64, probe_n=300, probe_test_n=500,
            downstream_test_n=500, train_sizes=(100, 300), fashion_sizes=(100,), seeds=(0, 1), t1_seeds=(0, 1, 2), ranks=(0, 1, 5),
            scales=(1.0, 1e2, 1e4), tuning_scales=(1.0, 1e2, 1e4), downstream_steps=((300, 12),), budget_grid=(8, 16), budget_sizes=(100,), budget_rule=False, budget_max_steps=32,
            sampler_budget_sizes=(100,), sampler_budget_max_steps=48, sampler_steps=(), checked_steps=(), elbo_sizes=(100,), confirm_seeds=(3, 4),
            downstream_batch_size=32, compile=False, study_n=100,
            lr_grid=(0.03,), factor_grid=(1.0,), cycles=3, bma_samples=2, bn_refresh=False, temperatures=(1.0, 0.0), cold_temperatures=(0.0,), tuning_seeds=1,
            val_fraction=0.2,
            geometry_random_directions=2, geometry_top_directions=2, geometry_points=5, geometry_test_n=200, geometry_bn_n=128, segmentation_dataset="camvid", segmentation_size=(45, 60),
            segmentation_steps=6, segmentation_batch_size=4, decoder_channels=16, aspp_rates=(1, 2, 3),
        ),
        Profile(
            name="cpu", model="resnet20", width=16, image_size=32, device="cpu",
            source_dataset="tinyimagenet32", source_train_n=None, source_val_n=None,
            source_epochs=12, ssl_epochs=12, swag_burnin_epochs=1, swag_epochs=2, swag_snapshots=30, swag_max_rank=20, batch_size=128, probe_n=10000, probe_test_n=5000,
            downstream_test_n=2000, train_sizes=(100, 300, 1000), fashion_sizes=(100, 1000), seeds=(0, 1, 2), t1_seeds=(0, 1, 2, 3, 4),
            ranks=(0, 1, 5, 20), scales=(1.0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7),
            tuning_scales=(1e1, 1e3, 1e5, 1e7), downstream_steps=((100, 200), (1000, 400)), budget_grid=(200, 400, 800),
            budget_sizes=(100, 1000), budget_rule=True, budget_max_steps=800, sampler_budget_sizes=(100, 300, 1000),
            sampler_budget_max_steps=6400, elbo_sizes=(100, 1000), confirm_seeds=(5, 6, 7), downstream_batch_size=64,
            # notebook 09's sampler budgets (third amendment; Bayes + non-learned at T = 1, n = 1 000: not converged)
            sampler_steps=(("bayes_learned (T1)", 100, 400), ("bayes_learned (cold)", 100, 400),
                           ("bayes_nonlearned (T1)", 100, 200), ("bayes_nonlearned (cold)", 100, 200),
                           ("bayes_learned (T1)", 300, 3200), ("bayes_learned (cold)", 300, 800),
                           ("bayes_nonlearned (T1)", 300, 400), ("bayes_nonlearned (cold)", 300, 800),
                           ("bayes_learned (T1)", 1000, 800), ("bayes_learned (cold)", 1000, 1600),
                           ("bayes_nonlearned (T1)", 1000, 6400), ("bayes_nonlearned (cold)", 1000, 1600)),
            # the budget checks that doubled (cold regime, 2026-12-06; the cold non-learned sampler at the cap)
            checked_steps=(("map_nonlearned", 1000, 3200), ("bayes_nonlearned (cold)", 1000, 6400)),
            compile=False, study_n=1000,
            lr_grid=(0.01, 0.03, 0.1), factor_grid=(0.1, 1.0, 10.0), cycles=6, bma_samples=10, bn_refresh=True, temperatures=(1.0, 0.1, 0.01, 0.0),
            cold_temperatures=(0.0, 1e-3, 1e-2, 1e-1), tuning_seeds=2, val_fraction=0.2,
            geometry_random_directions=10, geometry_top_directions=5, geometry_points=13, geometry_test_n=2000, geometry_bn_n=2048,
            segmentation_dataset="camvid", segmentation_size=(90, 120), segmentation_steps=800, segmentation_batch_size=8,
            decoder_channels=32, aspp_rates=(2, 4, 6),
        ),
        Profile(
            name="paper", model="resnet50", width=64, image_size=224, device="cuda",
            source_dataset="imagenet", source_train_n=None, source_val_n=None,
            source_epochs=0, ssl_epochs=0, swag_burnin_epochs=0.1, swag_epochs=0.25, swag_snapshots=40, swag_max_rank=20, batch_size=64, probe_n=10000, probe_test_n=None,
            downstream_test_n=None, train_sizes=(10, 100, 1000, 10000, 50000),
            fashion_sizes=(10, 100, 1000, 10000, 50000), seeds=(0, 1, 2, 3, 4),
            t1_seeds=(0, 1, 2, 3, 4),
            ranks=(0, 1, 2, 5, 10, 20), scales=(1.0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9),
            tuning_scales=(1e1, 1e3, 1e5, 1e7, 1e9),
            downstream_steps=((50000, 5000),), budget_grid=(1250, 2500, 5000), budget_sizes=(1000, 10000), budget_rule=True,
            budget_max_steps=40000, sampler_budget_sizes=(1000, 10000),
            sampler_budget_max_steps=80000, sampler_steps=(), checked_steps=(), elbo_sizes=(100, 1000, 10000), confirm_seeds=(5, 6, 7),
            downstream_batch_size=16, compile=False, study_n=1000,
            lr_grid=(0.001, 0.01, 0.1), factor_grid=(0.1, 1.0, 10.0), cycles=6, bma_samples=10, bn_refresh=False, temperatures=(1.0, 0.1, 0.01, 0.0),
            cold_temperatures=(0.0, 1e-3, 1e-2, 1e-1), tuning_seeds=2, val_fraction=0.2,
            geometry_random_directions=10, geometry_top_directions=5, geometry_points=21, geometry_test_n=10000, geometry_bn_n=5120,
            segmentation_dataset="voc", segmentation_size=(513, 513), segmentation_steps=30000, segmentation_batch_size=16,
            decoder_channels=256, aspp_rates=(6, 12, 18),
        ),
    )
}

KNOBS = tuple(f.name for f in fields(Profile))


def get_profile(name: str | Profile | None = None, **overrides) -> Profile:
    """The profile called ``name`` (default: ``$REPRO_PROFILE`` or ``cpu``), with ``overrides`` applied."""
    if isinstance(name, Profile):
        profile = name
    else:
        name = name or os.environ.get("REPRO_PROFILE", DEFAULT_PROFILE)
        if name not in PROFILES:
            raise ValueError(f"unknown profile {name!r}; valid profiles: {', '.join(PROFILES)}")
        profile = PROFILES[name]
    unknown = sorted(set(overrides) - set(KNOBS))
    if unknown:
        raise ValueError(f"unknown profile knob(s) {unknown}; valid knobs: {', '.join(KNOBS)}")
    return replace(profile, **overrides)


def results_root() -> Path:
    """The project's ``results/`` folder, or ``$REPRO_RESULTS_DIR``."""
    return Path(os.environ.get("REPRO_RESULTS_DIR", Path(__file__).resolve().parents[1] / "results"))


def results_dir(profile: Profile) -> Path:
    """``results/<profile>/`` (see :func:`results_root`), created on demand."""
    path = results_root() / profile.name
    path.mkdir(parents=True, exist_ok=True)
    return path
