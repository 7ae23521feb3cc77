"""The papermill batch: claim selection, and a failing cell stops it with a message naming notebook and cell."""
import nbformat
import pandas as pd
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from repro import reproduce
from repro.profiles import get_profile

SMOKE = get_profile("smoke")


def write_notebook(path, *sources):
    nb = new_notebook(cells=[new_code_cell("profile = None")] + [new_code_cell(s) for s in sources])
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_claims_select_their_notebooks():
    assert reproduce.notebooks_for(["C1"]) == ["01_prior_fitting", "02_loss_geometry"]
    assert reproduce.parse_claims("C3,c4,,") == ["C3", "C4"] and reproduce.parse_claims(" , ") is None
    with pytest.raises(ValueError, match=r"unknown claim id\(s\) \['C42'\]; valid: C1, C2"):
        reproduce.notebooks_for(["C42"])


def test_failing_cell_exits_nonzero_naming_notebook_and_cell(tmp_path, monkeypatch, capsys):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    write_notebook(notebooks / "01_fine.ipynb", "x = 1")
    write_notebook(notebooks / "02_broken.ipynb", "y = 2", "raise RuntimeError('boom in cell')")
    write_notebook(notebooks / "03_never.ipynb", "z = 3")
    monkeypatch.setattr(reproduce, "NOTEBOOK_DIR", notebooks)
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path / "results"))
    out_dir = tmp_path / "results" / "smoke" / "notebooks"
    out_dir.mkdir(parents=True)
    (out_dir / "02_broken.ipynb").write_text("the committed executed notebook")
    assert reproduce.run(SMOKE) == 1
    err = capsys.readouterr().err
    assert "notebook 02_broken failed in cell" in err and "RuntimeError: boom in cell" in err
    assert (out_dir / "01_fine.ipynb").exists()
    assert (out_dir / "02_broken.ipynb").read_text() == "the committed executed notebook"   # never overwritten
    scratch = tmp_path / "results" / "smoke" / "tmp" / "notebooks" / "02_broken.ipynb"
    assert f"partially executed notebook kept at {scratch}" in err
    partial = nbformat.read(scratch, as_version=4)                                        # kept for inspection
    assert any(o.get("ename") == "RuntimeError" for c in partial.cells for o in c.get("outputs", []))
    assert not (out_dir / "03_never.ipynb").exists()
    log = pd.read_csv(out_dir / "timings.csv")
    assert list(zip(log.notebook, log.ok)) == [("01_fine", True), ("02_broken", False)]


def test_each_execution_logs_its_wall_and_kernel_cpu_time(tmp_path, monkeypatch):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    # one notebook burns ~1.5 s of CPU in its kernel, the other sleeps 1.5 s: only the first may show it as CPU time
    write_notebook(notebooks / "01_burn.ipynb", "import time\nt = time.process_time()\n"
                                                "while time.process_time() - t < 1.5:\n    pass")
    write_notebook(notebooks / "02_sleep.ipynb", "import time\ntime.sleep(1.5)")
    monkeypatch.setattr(reproduce, "NOTEBOOK_DIR", notebooks)
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path / "results"))
    assert reproduce.run(SMOKE) == 0 and reproduce.run(SMOKE) == 0
    log = pd.read_csv(tmp_path / "results" / "smoke" / "notebooks" / "timings.csv")
    assert list(log.notebook) == ["01_burn", "02_sleep"] * 2 and log.ok.all()     # appended, not overwritten
    burn, sleep = log[log.notebook == "01_burn"], log[log.notebook == "02_sleep"]
    assert (sleep.wall_s >= 1.5).all() and (burn.wall_s >= 1.5).all()
    # kernel start-up costs about the same CPU in both (it varies by a few tenths under load, and the log rounds to
    # 0.1 s); the 1.5 s burnt must show on top of it, where a wall-clock or parent-only count would show ~0
    assert (burn.cpu_s.to_numpy() - sleep.cpu_s.to_numpy() > 1.0).all()


def test_claims_skip_notebook_01_when_its_outputs_exist(tmp_path, monkeypatch, capsys):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    write_notebook(notebooks / "01_prior_fitting.ipynb", "x = 1")
    write_notebook(notebooks / "04_scale_sweep.ipynb", "y = 2")
    monkeypatch.setattr(reproduce, "NOTEBOOK_DIR", notebooks)
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path / "results"))
    timings = tmp_path / "results" / "smoke" / "notebooks" / "timings.csv"
    monkeypatch.setattr(reproduce, "priors_missing", lambda profile: [tmp_path / "ssl_prior.pt"])
    made = []                                     # the workers' turn: after notebook 01, before the notebooks reading
    monkeypatch.setattr(reproduce, "make_runs", lambda profile, names: (made.append(
        pd.read_csv(timings).notebook.tolist()), (0, names))[1])
    assert reproduce.run(SMOKE, ["C3"]) == 0
    assert list(pd.read_csv(timings).notebook) == ["01_prior_fitting", "04_scale_sweep"]   # a prior missing: run 01
    assert made == [["01_prior_fitting"]]
    capsys.readouterr()
    monkeypatch.setattr(reproduce, "priors_missing", lambda profile: [])
    assert reproduce.run(SMOKE, ["C3"]) == 0
    assert list(pd.read_csv(timings).notebook)[2:] == ["04_scale_sweep"]                     # all there: skipped
    out = capsys.readouterr().out
    assert "01_prior_fitting: skipped, its priors and tables exist" in out
    assert "1 notebook(s); their last runs took" in out and "[1/1] 04_scale_sweep (profile smoke" in out
    assert "last run " in out and "ETA " in out                                             # from timings.csv
    assert reproduce.run(SMOKE) == 0                                                         # no claims: every one
    assert list(pd.read_csv(timings).notebook)[3:] == ["01_prior_fitting", "04_scale_sweep"]


def test_the_batch_stops_before_the_notebooks_when_the_workers_fail(tmp_path, monkeypatch, capsys):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    write_notebook(notebooks / "04_scale_sweep.ipynb", "y = 2")
    monkeypatch.setattr(reproduce, "NOTEBOOK_DIR", notebooks)
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setattr(reproduce, "make_runs", lambda profile, names: (3, names))
    assert reproduce.run(SMOKE) == 1
    assert "the workers stopped with exit code 3" in capsys.readouterr().err
    assert not (tmp_path / "results" / "smoke" / "notebooks" / "04_scale_sweep.ipynb").exists()
    assert reproduce.stages_of(["03_rank_ablation", "09_training_budget"]) == ["budget", "sampler_budget", "retune",
                                                                                 "C2", "own_budget_C2C3"]


def test_the_batch_uses_the_project_kernel_only_in_this_environment(monkeypatch):
    assert reproduce.kernel_name() in ("repro", "python3")
    monkeypatch.setattr(reproduce, "PROJECT_KERNEL", "no-such-kernel-here")
    assert reproduce.kernel_name() == "python3"          # `make setup` not run: the current environment's kernel


@pytest.mark.parametrize("argv, message", [
    (["--profile", "nope"], "error: unknown profile 'nope'; valid profiles: smoke, cpu, paper"),
    (["--profile", "smoke", "--claims", "C3,C42"], "error: unknown claim id(s) ['C42']; valid: C1, C2"),
])
def test_bad_input_is_one_line(argv, message, capsys):
    assert reproduce.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(message)


def test_without_the_data_the_batch_stops_in_one_line_saying_where_and_how(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("REPRO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("REPRO_RESULTS_DIR", str(tmp_path / "results"))
    assert reproduce.main(["--profile", "smoke"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"the study's data is not in {tmp_path / 'data'}" in err
    assert "fetch it with `make data` (python -m repro.data download all)" in err
    assert not (tmp_path / "results" / "smoke" / "notebooks").exists()          # nothing ran


def test_notebooks_name_the_kernel_make_setup_installs():
    import json

    for path in sorted(reproduce.NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb")):
        spec = json.loads(path.read_text())["metadata"]["kernelspec"]
        assert spec == {"display_name": "repro (.venv)", "language": "python", "name": reproduce.PROJECT_KERNEL}, path
    makefile = (reproduce.NOTEBOOK_DIR.parent / "Makefile").read_text()
    assert f'--name {reproduce.PROJECT_KERNEL} --display-name "repro (.venv)"' in makefile


def test_a_cpu_profile_without_recorded_runs_counts_its_runs_without_pricing_them_at_a_gpu_rate():
    import math
    from repro.experiments import costs
    from repro.profiles import get_profile

    seconds, basis = costs.rates(get_profile("smoke"), {}).seconds("transfer", "map_learned", 12, "test")
    assert math.isnan(seconds) and basis == "none"
    seconds, basis = costs.rates(get_profile("paper"), {}).seconds("transfer", "map_learned", 100, "test")
    assert basis == "assumed" and seconds == 100 * costs.ASSUMED_SECONDS_PER_STEP["transfer"]


def test_a_run_is_priced_at_its_training_precisions_recorded_rate():
    """bf16 runs train faster than fp32 ones: a planned bf16 run takes the bf16 rate where bf16 runs are recorded,
    else the rate over every precision of its inference."""
    from repro.experiments import costs

    run = dict(approach="map_learned", split="test", status="ok")
    recorded = {"transfer": pd.DataFrame([run | dict(steps=100, train_time_s=30.0, wall_time_s=40.0, precision="fp32"),
                                          run | dict(steps=100, train_time_s=10.0, wall_time_s=20.0, precision="bf16")])}
    model = costs.Rates.fit(recorded)
    assert model.seconds("transfer", "map_learned", 200, "test", "bf16") == (pytest.approx(200 * 0.1 + 10.0), "recorded")
    assert model.seconds("transfer", "map_learned", 200, "test", "fp32")[0] == pytest.approx(200 * 0.3 + 10.0)
    assert model.seconds("transfer", "map_learned", 200, "test", "fp16")[0] == pytest.approx(200 * 0.2 + 10.0)


def test_before_notebook_09_settles_the_budgets_only_its_curves_are_made(monkeypatch, capsys):
    """A profile whose budgets notebook 09's rule sets, before it has: the workers make the learning curves only, and
    only notebook 09 and the notebooks without a grid run (the others would need runs at budgets not yet chosen)."""
    from repro.experiments import budget

    cpu = get_profile("cpu")
    monkeypatch.setattr(budget, "mismatches", lambda profile: ["notebook 09 has not chosen the budgets yet"])
    started = []
    monkeypatch.setattr(reproduce.subprocess, "call", lambda argv: started.append(argv) or 0)
    monkeypatch.setattr(reproduce, "stages_of", lambda names: ["budget", "sampler_budget", "five_way"])
    from repro.experiments import studies
    from repro.runner import MissingPrerequisite

    def lacking(rec):                                        # a job whose runs are not recorded
        raise MissingPrerequisite("runs are not recorded", "make studies")
    monkeypatch.setattr(studies, "jobs", lambda profile, stages: [(s, lacking) for s in stages])
    code, names = reproduce.make_runs(cpu, ["02_loss_geometry", "05_five_way", "09_training_budget"])
    assert code == 0 and names == ["02_loss_geometry", "09_training_budget"]
    assert started[0][started[0].index("--stages") + 1] == "budget"
    assert "the step budgets are not settled yet" in capsys.readouterr().out
