"""REPORT.md's generated blocks, from the CSVs the notebooks write (never typed by hand).

Each claim notebook ends by recording its verdicts (:mod:`repro.findings`: ``results/<profile>/claims/<id>.csv``).
``python -m repro.report --profile cpu`` rewrites every block between its ``<!-- name:begin -->`` /
``<!-- name:end -->`` markers of REPORT.md: the summary table, notebook 09's budgets, the compute, ...
"""
from __future__ import annotations

import argparse
import functools
import re
import sys
from pathlib import Path

import pandas as pd

from .cli import add_profile_argument, run_main
from .claims import CLAIMS, RERUN
from .findings import VERDICTS, claim_rows, row_label
from .glance import NOT_RUN, render_forest, render_summary, save_forest
from .profiles import PROFILES, Profile, get_profile, results_dir, results_root
from . import sensitivity
from .experiments.approaches import APPROACHES, ARM_LABELS, LABELS, TASKS, arm_name
from .experiments.budget import unconverged
from .experiments.pretrain import STUDIED_KINDS
from .experiments.studies import NOTEBOOK_STAGES

REPORT = Path(__file__).resolve().parents[1] / "REPORT.md"
REPORTED = "cpu"          # the profile whose results REPORT.md reports (make reproduce on it regenerates the blocks)


def reports(profile: Profile) -> bool:
    """Whether ``profile``'s results are the ones REPORT.md reports: the reported profile, in this repository's
    results folder (not a scratch ``$REPRO_RESULTS_DIR``)."""
    return profile.name == REPORTED and results_root().resolve() == (REPORT.parent / "results").resolve()

def render_findings(profile: Profile, claim: str) -> str:
    """A claim's recorded verdicts in full, one row per reading (regime and basis): the finding with every comparison,
    its interval and seeds, and the evidence links (the summary table shows only the primary effect)."""
    if (rows := claim_rows(profile, claim)) is None:
        return NOT_RUN
    lines = ["| reading | verdict | finding | evidence |", "|---|---|---|---|"]
    for r in rows.to_dict("records"):
        cells = (r["label"] or "one reading", f"**{r['verdict']}**", r["finding"], r["evidence"])
        lines.append("| " + " | ".join(str(c).replace("\n", " ").replace("|", "\\|") for c in cells) + " |")  # a | splits
    return "\n".join(lines)


def _table(profile: Profile, name: str) -> pd.DataFrame | None:
    """``results/<profile>/<name>.csv`` as a DataFrame, or None where a notebook has not written it yet."""
    path = results_dir(profile) / f"{name}.csv"
    return pd.read_csv(path) if path.exists() else None


def render_source(profile: Profile) -> str:
    """Notebook 01's backbones: checkpoint, SWA mean and SWAG draws (mean ± SD) on every score, the stationarity
    check, the protocol hash of each prior, and the SSL and supervised probes by epoch with the matched epoch."""
    df, check = _table(profile, "prior_fitting/source_evaluation"), _table(profile, "prior_fitting/swa_check")
    if df is None:
        return NOT_RUN
    check = None if check is None else check.set_index("kind")
    cols = ["source_acc", "probe_source_acc", "probe_cifar10_acc"]
    lines = ["| prior | state | source val acc (head) | source linear probe | CIFAR-10 linear probe | SWA mean ≥ checkpoint |",
             "|---|---|---|---|---|---|"]
    fmt = lambda x: "—" if pd.isna(x) else f"{x:.3f}"
    for kind, g in df.groupby("kind", sort=False):
        samples = g[g.state.str.startswith("swag_sample")]
        ok = "—" if check is None or kind not in check.index else ("yes" if check.loc[kind, "swa_ok"] else "**no**")
        for _, r in g[~g.state.str.startswith("swag_sample")].iterrows():
            lines.append(f"| {kind} | {r.state} | " + " | ".join(fmt(r[c]) for c in cols)
                         + f" | {ok if r.state == 'swa_mean' else ''} |")
        sd = lambda c: "—" if samples[c].isna().all() else f"{samples[c].mean():.3f} ± {samples[c].std():.3f}"
        lines.append(f"| {kind} | {len(samples)} SWAG draws (scale 1) | " + " | ".join(sd(c) for c in cols) + " | |")
    if (probes := _table(profile, "prior_fitting/probes_by_epoch")) is not None:
        figure = "01_probes_by_epoch.png"
        link = (f", [figure](results/{profile.name}/figures/{figure})"
                if (results_dir(profile) / "figures" / figure).exists() else "")      # once notebook 01 has drawn it
        lines.append(f"\nCIFAR-10 linear probe by pre-training epoch ([CSV](results/{profile.name}/prior_fitting/"
                     f"probes_by_epoch.csv){link}):\n")
        wide = probes.pivot(index="kind", columns="epoch", values="probe_cifar10_acc")
        lines.append("| prior | " + " | ".join(f"ep {e}" for e in wide.columns) + " |")
        lines.append("|---|" + "---|" * len(wide.columns))
        lines += [f"| {k} | " + " | ".join(fmt(v) for v in row) + " |" for k, row in wide.iterrows()]
    return "\n".join(lines)


def render_geometry(profile: Profile) -> str:
    """C1's flatness tests in both BatchNorm modes, and the mean radial share of each kind of direction."""
    tests, directions = _table(profile, "geometry/c1_tests"), _table(profile, "geometry/directions")
    if tests is None:
        return NOT_RUN
    if "bn" not in tests:
        return "_Run before the BatchNorm variants existed: re-run notebook 02._"
    radial = None if directions is None else directions.groupby(["kind", "direction_type"]).radial_share.mean()
    lines = ["| prior | BatchNorm | \\|t\\| | increase, top directions | increase, random directions | Welch p (top flatter) | "
             "Welch p (top sharper) | radial share top / random |", "|---|---|---|---|---|---|---|---|"]
    for r in tests.itertuples():
        share = "—" if radial is None else f"{radial[r.kind]['top']:.3f} / {radial[r.kind]['random']:.4f}"
        lines.append(f"| {r.kind} | {r.bn} | {r.t_star:g} | {r.top_mean:.3f} ± {r.top_se:.3f} | "
                     f"{r.random_mean:.3f} ± {r.random_se:.3f} | {r.welch_p:.2g} | {r.welch_p_sharper:.2g} | {share} |")
    return "\n".join(lines)


def render_tuning(profile: Profile) -> str:
    """The tuned hyperparameters (notebook 03 writes ``transfer/tuning.csv``) and the fixed ones of every run."""
    if (df := _table(profile, "transfer/tuning")) is None:
        return NOT_RUN
    keys = [c for c in ("dataset", "n_train", "approach", "prior_kind", "regime") if c in df]   # the second protocol
    cols = [c for c in ("lr", "weight_decay", "scale", "head_var", "alpha", "temperature") if c in df]
    reused = "tuned_n" in df      # the second protocol names where each row was tuned when it reuses another's
    head = keys + (["tuned at"] if reused else []) + cols
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in df.itertuples():
        cells = [str(getattr(r, c)) for c in keys]
        if reused:
            same = (r.tuned_kind, r.tuned_n) == (r.prior_kind, r.n_train)
            cells.append("—" if same else f"{r.tuned_kind}, n = {r.tuned_n}")
        cells += ["—" if pd.isna(getattr(r, c)) else f"{getattr(r, c):g}" for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    if reused:
        lines.append(f"\n\"tuned at\": the (prior kind, size) whose validation runs chose a row's values (\"—\": its own); "
                     f"at every size SGD's weight decay and the cold temperature are those chosen at n = "
                     f"{profile.study_n}.")
    p = profile
    budgets = ", ".join(f"n ≤ {n}: {s}" for n, s in sorted(p.downstream_steps))
    lines.append(f"\nFixed for every run: batch {p.downstream_batch_size}, momentum 0.9; Bayes: SGHMC, cosine cycles "
                 f"(first half of each noise-free); MAP: T = 0, one cosine decay; test subset {p.downstream_test_n} "
                 f"images. Steps, cycles, burn-in cycles, BMA samples and temperature are in each run's CSV row: the "
                 f"first protocol ran 200 steps and 5 cycles, all kept; the profile now gives steps by training-set "
                 f"size ({budgets}; notebook 09) and {p.cycles} cycles, the first burn-in, {p.bma_samples} samples"
                 + (", each with its BatchNorm statistics re-estimated on the training images (notebook 09's rule 5)."
                    if p.bn_refresh else "."))
    return "\n".join(lines)


def render_compute(profile: Profile) -> str:
    """Runs and recorded single-thread wall time of the downstream grids (transfer, segmentation) by protocol, split and
    approach, with each grid's total per protocol (the first protocol: 200 steps, T = 1, every cycle kept; the third,
    every arm at its own budget: the only runs in bf16)."""
    frames = [pd.read_csv(path).assign(study=study) for study in TASKS
              if (path := results_dir(profile) / study / "runs.csv").exists()]
    if not frames:
        return NOT_RUN
    df = pd.concat(frames, ignore_index=True)
    third = df.precision.eq("bf16")                     # every run records its precision
    df = df.assign(protocol=df.protocol.map({1: "first", 2: "second"}).where(~third, "third"))
    keys = ["study", "protocol"]
    g = df.groupby([*keys, "split", "approach"]).agg(
        runs=("key", "size"), failed=("status", lambda s: int((s != "ok").sum())),
        mean_s=("wall_time_s", "mean"), total_h=("wall_time_s", lambda s: s.sum() / 3600))
    lines = ["| grid | protocol | split | approach | runs | failed | mean wall time per run (s) | total (CPU-hours) |",
             "|---" * 8 + "|"]
    lines += [f"| {st} | {pr} | {sp} | {a} | {r.runs:.0f} | {r.failed:.0f} | {r.mean_s:.0f} | {r.total_h:.2f} |"
              for (st, pr, sp, a), r in g.iterrows()]
    lines += [f"| **{st}** | **{pr}** | | | **{len(d)}** | {int((d.status != 'ok').sum())} | {d.wall_time_s.mean():.0f} | "
              f"**{d.wall_time_s.sum() / 3600:.2f}** |" for (st, pr), d in df.groupby(keys, sort=False)]
    return "\n".join(lines)


def render_totals(profile: Profile) -> str:
    """The study's compute in one sentence: every downstream run and its recorded CPU time per grid, and how long
    re-executing the claim notebooks from the recorded runs took (each notebook's last run, ``timings.csv``)."""
    grids = {study: pd.read_csv(path) for study in TASKS
             if (path := results_dir(profile) / study / "runs.csv").exists()}
    if not grids:
        return NOT_RUN
    runs, hours = sum(len(d) for d in grids.values()), sum(d.wall_time_s.sum() for d in grids.values()) / 3600
    parts = "; ".join(f"{study} {len(d):,} runs and {d.wall_time_s.sum() / 3600:.1f} CPU-hours" for study, d in grids.items())
    text = (f"**{runs:,} downstream runs, {hours:.1f} recorded CPU-hours** ({parts}; single-thread wall times summed, "
            f"every protocol).")
    if (t := _table(profile, "notebooks/timings")) is not None:
        last = t[t.ok.astype(str) == "True"].groupby("notebook").last()
        readers = last[last.index.isin(NOTEBOOK_STAGES)]          # the notebooks that read the recorded runs
        text += (f" Re-executing the {len(readers)} notebooks that read the recorded runs ({readers.index[0][:2]}–"
                 f"{readers.index[-1][:2]}) takes {readers.wall_s.sum() / 60:.1f} minutes (`make reproduce NO_RUNS=1`, "
                 f"[timings](results/{profile.name}/notebooks/timings.csv)).")
    return text


def prior_statistics(profile: Profile) -> pd.DataFrame:
    """What REPORT.md quotes about the learned priors, computed from the prior files (never typed): per kind, the
    trace of each half of Σ = ½ diag + ½ D Dᵀ/(K − 1) at λ = 1 (docs/conventions.md §1) and the SWAG variances' quantiles."""
    from .method.prior_files import load_prior

    rows = []
    for kind in STUDIED_KINDS:
        path = results_dir(profile) / "priors" / f"{kind}_prior.pt"
        if not path.exists():
            continue
        prior = load_prior(path)
        D, var = prior.factor.double(), prior.diag.double()
        k = D.shape[1]
        rows.append({"kind": kind, "parameters": prior.dim, "deviations": k,
                     "trace_low_rank": float(0.5 * D.square().sum() / max(k - 1, 1)),
                     "trace_diagonal": float(0.5 * var.sum()), "median_variance": float(var.median()),
                     "min_variance": float(var.min()), "max_variance": float(var.max())})
    return pd.DataFrame(rows)


def render_priors(profile: Profile) -> str:
    """The learned priors' size, covariance traces and SWAG variances (from :func:`prior_statistics`)."""
    df = prior_statistics(profile)
    if df.empty:
        return NOT_RUN
    lines = ["| prior | parameters d | deviations K | trace of ½ D Dᵀ/(K − 1) | trace of ½ diag | SWAG variance: median "
             "| smallest | largest |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r.kind} | {r.parameters:,} | {r.deviations} | {r.trace_low_rank:.3g} | {r.trace_diagonal:.3g} | "
              f"{r.median_variance:.2g} | {r.min_variance:.2g} | {r.max_variance:.2g} |" for r in df.itertuples()]
    return "\n".join(lines)


#: Claims whose recorded verdict predates the amended statistics (C1: notebook 02 carries the amended rule, but has not
#: run on the version-2 priors yet).
NOT_AMENDED: tuple[str, ...] = ("C1",)


def render_amendment(profile: Profile) -> str:
    """Each claim's verdict under the first rules (``claims/before_amendment.csv``) and under the amended ones, on the
    same runs: the first protocol's (``claims/first_protocol.csv``) where that table exists, never a second-protocol
    verdict (:func:`render_budget` shows those)."""
    if (before := _table(profile, "claims/before_amendment")) is None:
        return "_No verdicts from before the amendment on this profile._"
    before = before.set_index("claim").verdict
    if (first := _table(profile, "claims/first_protocol")) is not None:     # absent where one protocol ever ran
        first = dict(zip(first.claim, first.verdict.fillna("—")))
    lines = ["| id | verdict, first rules (one-sided t-tests over seeds, size × seed pooled, no Holm) | verdict, amended "
             "rules (bootstrap over seeds × images, Holm, TOST), same runs |", "|---|---|---|"]
    for claim in CLAIMS:
        now = _verdicts(profile, claim) if first is None else first.get(claim, "—")
        lines.append(f"| {claim} | {before.get(claim, '—')} | {now}{' (rule not yet amended)' * (claim in NOT_AMENDED)} |")
    return "\n".join(lines)


def _verdicts(profile: Profile, claim: str, own: bool | None = None) -> str:
    """A claim's current verdict, one per temperature regime (and basis) where it has several ("—" before it is
    concluded); ``own``: only its own-budget rows (True) or only the others (False), each named by its regime."""
    if (df := claim_rows(profile, claim)) is None:
        return "—"
    if own is not None:
        df = df[(df.basis == "own") == own].assign(label=lambda d: [row_label(r, "") for r in d.regime])
    return "; ".join(f"{label}: {v}" if label else v for label, v in zip(df.label, df.verdict)) or "—"


def render_training_budget(profile: Profile) -> str:
    """Notebook 09: mean holdout accuracy per size, arm and total steps (the chosen budget in bold), the budget of
    each size and of segmentation, where the curves had not flattened, and the outcome of rules 3 (cycles) and 5
    (BatchNorm re-estimation)."""
    curves, chosen = _table(profile, "training_budget/curves"), _table(profile, "training_budget/budgets")
    if curves is None or chosen is None:
        return NOT_RUN
    arms = sorted(dict.fromkeys(curves.arm), key=lambda a: ARM_LABELS.get(a, a))    # the paper's numbering
    lines = ["| n | steps | " + " | ".join(ARM_LABELS.get(a, a) for a in arms) + " |", "|---|---|" + "---|" * len(arms)]
    budget = dict(zip(chosen.n_train, chosen.budget))
    for (n, steps), g in curves.groupby(["n_train", "steps"]):
        acc = dict(zip(g.arm, g.accuracy))
        mark = "**" if budget.get(n) == steps else ""
        lines.append(f"| {n} | {mark}{steps}{mark} | " + " | ".join(f"{acc[a]:.3f}" if a in acc else "" for a in arms)
                     + " |")
    lines.append("")
    lines += [f"* n = {r['n_train']}: budget **{_int(r['budget'])}** steps (SGD transfer's rule: "
              f"{_int(r['sgd_transfer'])}, MAP + learned's: {_int(r['map_learned'])})."
              for r in chosen.to_dict("records")]
    if (seg := _table(profile, "training_budget/segmentation_budget")) is not None:
        lines.append(f"* segmentation (CamVid val mIoU): budget **{_int(seg.budget.iloc[0])}** steps.")
    lines += [f"* not converged: {note}." for task in TASKS for note in unconverged(profile, task)]
    if (cycles := _table(profile, "training_budget/cycle_check")) is not None:
        bad = cycles[~cycles.trained_every_cycle.astype(bool)]
        lines.append("* rule 3: " + ("every kept cycle ends within 2 points of the first kept one at the chosen "
                                      "budgets." if bad.empty else "a later cycle ends more than 2 points below the first "
                                      "kept one: " + "; ".join(f"n = {r.n_train}, {r.arm}" for r in bad.itertuples())))
    if (bn := _table(profile, "training_budget/bn_refresh_decision")) is not None:
        r = bn.iloc[0]
        lines.append(f"* rule 5: BatchNorm statistics re-estimated per sample change the sampler arms' mean holdout "
                     f"accuracy by {r.mean_gain:+.4f} and NLL by {r.mean_nll_change:+.4f}: "
                     + ("adopted for every sampler run." if r.adopt else "not adopted."))
    return "\n".join(lines)


def render_third_protocol(profile: Profile) -> str:
    """Every arm's own values and budget (notebook 05: ``transfer/own_budget_choices``), how finely rule 5's holdout
    set told two candidates apart (notebook 09: ``training_budget/retune_resolution``) and C4's T = 1 ablation
    (notebook 05: ``transfer/t1_ablation``)."""
    if (choices := _table(profile, "transfer/own_budget_choices")) is None:
        if (runs := _table(profile, "transfer/runs")) is None or not (third := runs[runs.precision.eq("bf16")]).size:
            return NOT_RUN
        return (f"_In progress: {len(third)} third-protocol runs recorded ({third.wall_time_s.sum() / 3600:.1f} "
                f"CPU-hours). Notebook 05 writes this table once every arm of a regime is tuned and its budget "
                f"checked._")
    names = ("lr", "weight_decay", "scale", "head_var", "alpha", "temperature", "cycles")
    lines = ["| arm | n | tuned at (steps) | budget (steps) | lr | weight decay | λ | head variance | α | T | cycles |",
             "|---" * 11 + "|"]
    lines += [f"| {ARM_LABELS.get(r['arm'], r['arm'])} | {r['n_train']} | {r['tuned_steps']} | {r['steps']} | "
              + " | ".join("—" if pd.isna(r[c]) else f"{r[c]:g}" for c in names) + " |"
              for r in choices.to_dict("records")]
    if (res := _table(profile, "training_budget/retune_resolution")) is not None and len(res):
        two = 200 * res.se
        lines.append(f"\nTwo neighbouring candidates of the holdout tuning are told apart at 2 SE = {two.median():.1f} accuracy "
                     f"points (median over {len(res)} pairs of neighbours; {two.min():.1f} to {two.max():.1f}), "
                     f"images and seeds both counted; the tie band is 1 point.")
    if (abl := _table(profile, "transfer/t1_ablation")) is not None:
        lines += ["", "| C4's ablation at n = " + f"{profile.study_n} | augmentation | accuracy | minus MAP + learned "
                  "(± SE over seeds) | share of the second protocol's T = 1 gap removed |", "|---|---|---|---|---|"]
        for r in abl.to_dict("records"):
            share = r["share_of_second_gap_removed"]
            lines.append(f"| {ARM_LABELS.get(r['arm'], r['arm'])} | {'on' if r['augment'] else 'off'} | "
                         f"{r['accuracy']:.3f} | {100 * r['minus_map']:+.1f} ± {100 * r['minus_map_se']:.1f} pt | "
                         f"{'—' if pd.isna(share) else f'{share:.0%}'} |")
    return "\n".join(lines)


def _int(value) -> str:
    return "not chosen" if pd.isna(value) else str(int(value))


def render_budget(profile: Profile) -> str:
    """Budget sensitivity: each claim's verdict under the first protocol (200 steps, T = 1, one tuning for every size;
    ``claims/first_protocol.csv``) and under the second, and the mean test accuracy of every CIFAR-10 five-way arm
    under each (``transfer/first_protocol_five_way_summary.csv``, ``transfer/five_way_summary.csv``)."""
    first = _table(profile, "claims/first_protocol")
    if first is None:
        return "_No first-protocol verdicts on this profile._"
    lines = ["| id | first protocol (200 steps, T = 1) | second protocol (budgets of notebook 09, both regimes) | "
             "third protocol (every arm at its own budget and tuning) |", "|---|---|---|---|"]
    for claim, verdict in zip(first.claim, first.verdict):
        now = claim_rows(profile, claim)
        second = "pending" if now is None else _verdicts(profile, claim, own=False)
        third = _verdicts(profile, claim, own=True) if claim in RERUN else "—"
        lines.append(f"| {claim} | {verdict} | {second}{' (source side: the priors refitted in notebook 01)' if claim == 'C1' else ''} | "
                     f"{'pending' if third == '—' and claim in RERUN else third} |")
    old, new = _table(profile, "transfer/first_protocol_five_way_summary"), _table(profile, "transfer/five_way_summary")
    if old is None:
        return "\n".join(lines)
    new = new if new is not None and "arm" in new else None          # written by the second protocol's notebook 05
    lines += ["", "| arm | prior | n | first protocol: 200 steps | second: the size's budget (T = 1 for a sampler) | "
              "second, cold T |", "|---|---|---|---|---|---|"]
    for r in old[old.dataset == "cifar10"].itertuples():
        cells = []
        for arm in (arm_name(r.approach), arm_name(r.approach, "T1"), arm_name(r.approach, "cold")):
            g = None if new is None else new[(new.dataset == "cifar10") & (new.arm == arm) & (new.prior_kind == r.prior_kind)
                                             & (new.n_train == r.n_train)]
            cells.append("pending" if g is None else f"{g.accuracy_mean.iloc[0]:.3f}" if len(g) else "")
        bayes = APPROACHES[r.approach].bayes
        cells = [cells[1], cells[2]] if bayes else [cells[0], "—"]
        lines.append(f"| {LABELS[r.approach]} | {r.prior_kind} | {r.n_train} | {r.accuracy_mean:.3f} | {cells[0]} | "
                     f"{cells[1]} |")
    return "\n".join(lines)


def render_simulation(profile: Profile) -> str:
    """How often each claim's rule returns each word on simulated results (``python -m repro.claims --out ...``)."""
    if (df := _table(profile, "claims/simulation")) is None:
        return "_Not yet simulated for this profile._"
    lines = ["| claim | true effect (points: accuracy; C7 NLL 0.01 nats and (3)'s over-confidence; C9 mIoU) | "
             "simulations | " + " | ".join(VERDICTS) + " |",
             "|---|---|---|" + "---|" * len(VERDICTS)]
    lines += [f"| {r['claim']} | {r['effect_points']:+g} | {r['simulations']} | "
              + " | ".join(f"{r[v]:.1%}" for v in VERDICTS) + " |" for _, r in df.iterrows()]
    return "\n".join(lines)


BLOCKS = {"claims": render_summary, "forest": render_forest, "amendment": render_amendment,
          "training_budget": render_training_budget,
          "third_protocol": render_third_protocol,
          "budget": render_budget, "simulation": render_simulation, "df_sensitivity": sensitivity.render,
          "source": render_source,
          "priors": render_priors, "geometry": render_geometry, "tuning": render_tuning, "compute": render_compute,
          "totals": render_totals,
          **{f"finding-{c}": functools.partial(render_findings, claim=c) for c in CLAIMS}}   # each claim's in full


def update_report(profile: Profile, path: Path = REPORT) -> bool:
    """Rewrite every generated block (``<!-- name:begin -->`` ... ``<!-- name:end -->``) of REPORT.md."""
    text = new = path.read_text()
    save_forest(profile)
    for name, render in BLOCKS.items():
        new = re.sub(rf"(<!-- {name}:begin -->\n).*?(\n<!-- {name}:end -->)",
                     lambda m: m.group(1) + render(profile) + m.group(2), new, flags=re.S)
    path.write_text(new)
    return new != text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.report", description=__doc__.splitlines()[0])
    add_profile_argument(parser, default=REPORTED, help=f"whose results fill REPORT.md's generated blocks, one of "
                                                     f"{', '.join(PROFILES)} (default: cpu)")
    args = parser.parse_args(argv)
    return run_main(lambda: print("REPORT.md", "updated" if update_report(get_profile(args.profile))
                                  else "already up to date"), errors=(ValueError, OSError))


if __name__ == "__main__":
    sys.exit(main())
