"""A reproduction of "Pre-Train Your Loss" (Shwartz-Ziv et al., NeurIPS 2022): the package behind the notebooks.

The layout follows the paper's pipeline; each floor imports only from the floors above it (a test checks that the
import graph has no cycle):

``errors``, ``profiles``, ``files``, ``leases``, ``runner``, ``registry``, ``cli``
    the errors a user can fix (one line in a notebook and on the command line), every size knob (``smoke`` / ``cpu``
    / ``paper``), atomic writes, who runs which run of a shared grid (leases, safe on a network filesystem), the
    resumable CSV grid (failed runs retried), registries of small classes by name, what the ``python -m`` entry
    points share (``--profile``, one-line errors).
``data/``
    the datasets in memory: ``formats`` (registry, readers, packer), ``cache`` (decoded images), ``subsets``
    (stratified subsets, batches), ``transforms``, ``downloads`` and ``checksums`` (``python -m repro.data download``,
    ``verify``: the study's exact files), ``imagenet``, ``voc``, ``shift``.
``models/``
    the architectures (CIFAR ResNets, torchvision backbones, DeepLabv3+) and ``pretrained`` ImageNet weights.
``train``, ``compute``
    the training loop, devices, flat parameter vectors, linear probes; how downstream training computes its loss
    (precision: fp32 or bf16 autocast; torch.compile once per process).
``method/``
    the paper's mathematics: ``swag`` (SWAG moments), ``priors`` (learned low-rank Gaussian and isotropic priors),
    ``prior_files`` (their file format), ``samplers`` (SGLD, SGHMC with the temperature convention, BMA), and
    ``variational`` (the data-emphasized ELBO that learns the prior's widths: notebook 10, an extension).
``experiments/``
    ``pretrain`` and ``source_quality`` (source side, notebook 01), ``geometry`` (C1), ``approaches`` (the one approach
    vocabulary), ``families`` and ``algorithms`` (the prior families and inference algorithms, each a registered
    class), ``spec`` (a run's typed parameters and its key; ``migrate``, the one migration to it), ``transfer`` and
    ``segmentation`` (one downstream run; ``evaluations``: what particular studies measure on it), ``grid`` (a snapshot of the recorded runs: what a study reads, or lacks),
    ``tuning`` (validation protocol), ``budget`` (notebook 09), ``retune`` and ``own_budget`` (every arm's own tuning
    and budget, and the third protocol's runs at them), ``learned_scale`` (notebook 10), ``studies`` (the claim
    grids, each stage a list of jobs), ``workers`` (the only code that makes runs; ``python -m repro.studies``),
    ``launch`` (one worker process per core here, or a SLURM job array through submitit), ``costs`` (the dry run's
    cost table).
``analysis/``
    ``metrics``, ``stats`` (bootstrap, Holm, TOST, summaries), ``predictions`` (per-image outcomes), ``verdicts`` (the
    decision rule of every claim), ``simulate`` (the rules on simulated tables).
``claims``, ``findings``, ``plots``, ``report``, ``reproduce``, ``studies``, ``bench``, ``retime``, ``lab``, ``check_lab``
    the paper's claims (one registry: statement, notebook, rule, simulated check), each claim's recorded verdicts,
    figures and tables, REPORT.md's generated blocks, the papermill batch (``--dry-run``: its cost), the grids'
    command, benchmarks, the recorded grids re-timed with today's code (and the training-precision rule), Lab's
    save hook (notebooks saved without outputs), JupyterLab driven in a headless browser (``make check-lab``).

Conventions (prior scale, temperature, approaches): ``docs/conventions.md``; the code's history: ``docs/history.md``. Library functions take a
:class:`repro.profiles.Profile`; only the entry points (notebooks, ``python -m`` commands) resolve one by name.
"""
