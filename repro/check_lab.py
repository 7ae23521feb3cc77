"""``make check-lab``: the study as a user meets it in JupyterLab, driven in a headless browser.

Starts Lab as ``make lab`` does (repository root, the notebooks folder first, the save hook of :mod:`repro.lab`) on
a free local port with ``REPRO_PROFILE=smoke``, opens a claim notebook (04 by default), runs all its cells from
Lab's Run menu, and fails unless the claim's verdict line appears; then saves the notebook (Ctrl+S) and fails unless
``git status`` stays clean. Screenshots of each step go to ``results/smoke/check_lab/``. Needs Debian's Chromium
(``apt-get install chromium``) and Playwright (``make check-lab`` installs it); not part of ``make test``.
"""
from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BROWSERS = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_lab(port: int, token: str, log: Path) -> subprocess.Popen:
    """Lab as ``make lab`` starts it, on ``port`` with ``token``, the smoke profile in its kernels' environment."""
    env = os.environ | {"REPRO_PROFILE": "smoke"}
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={ROOT}", "--LabApp.default_url=/lab/tree/notebooks",
           "--FileContentsManager.pre_save_hook=repro.lab.strip_on_save"] + (["--allow-root"] if os.getuid() == 0 else [])
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)


def wait_for(port: int, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise RuntimeError(f"JupyterLab did not listen on port {port} within {timeout:.0f} s")


def check(notebook: str, claim: str, out: Path, timeout_min: float) -> dict:
    """Drive Lab through ``notebook``; the wall time and what was seen. Raises on any failed step."""
    from playwright.sync_api import sync_playwright

    browser_path = next((b for b in BROWSERS if Path(b).exists()), None)
    if browser_path is None:
        raise RuntimeError("no Chromium found: install Debian's, `apt-get install chromium`")
    out.mkdir(parents=True, exist_ok=True)
    port, token, t0 = free_port(), secrets.token_hex(16), time.time()
    lab = start_lab(port, token, out / "lab.log")
    try:
        wait_for(port)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/lab/tree/notebooks/{notebook}?token={token}")
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
            page.wait_for_selector(".jp-DirListing-item", timeout=60_000)
            page.locator("text=/\\| Idle/").first.wait_for(timeout=120_000)     # the kernel is up (status bar)
            news = page.locator(".jp-Notification-Toast-Close")           # Lab's "Jupyter news?" toast, if shown
            if news.count():
                news.first.click()
            page.screenshot(path=str(out / "1_opened.png"))
            page.click(".jp-Notebook .jp-Cell >> nth=0")                 # the notebook has the focus
            page.click("li.lm-MenuBar-item:has-text('Run')")
            page.click("li.lm-Menu-item:has-text('Run All Cells')")
            time.sleep(20)
            page.screenshot(path=str(out / "2_running.png"))
            verdict = page.locator(f"text=/{claim}.* on profile smoke: /").first
            verdict.wait_for(timeout=timeout_min * 60_000)
            verdict.scroll_into_view_if_needed()
            page.screenshot(path=str(out / "3_verdict.png"))
            seen = verdict.inner_text()
            page.keyboard.press("Control+s")
            time.sleep(3)
            page.screenshot(path=str(out / "4_saved.png"))
            page.click(".jp-BreadCrumbs-home")                 # the repository root: README, REPORT, results/
            time.sleep(2)
            root = page.locator(".jp-DirListing-item").all_inner_texts()
            page.screenshot(path=str(out / "5_root.png"))
            browser.close()
    finally:
        lab.terminate()
        lab.wait(timeout=30)
    dirty = subprocess.run(["git", "status", "--porcelain", "notebooks/"], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()
    if dirty:
        raise RuntimeError(f"saving in Lab left notebooks/ changed:\n{dirty}")
    return {"wall_s": round(time.time() - t0), "verdict": seen.strip()[:300],
            "root": [r.split("\n")[0] for r in root]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repro.check_lab", description=__doc__.splitlines()[0])
    parser.add_argument("--notebook", default="04_scale_sweep.ipynb")
    parser.add_argument("--claim", default="C3")
    parser.add_argument("--timeout-min", type=float, default=30)
    args = parser.parse_args(argv)
    out = ROOT / "results" / "smoke" / "check_lab"
    shutil.rmtree(out, ignore_errors=True)
    try:
        result = check(args.notebook, args.claim, out, args.timeout_min)
    except Exception as e:                     # one line, and where the screenshots and Lab's log are
        print(f"check-lab FAILED: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} (see {out})",
              file=sys.stderr)
        return 1
    print(f"check-lab passed in {result['wall_s']} s: {result['verdict']}\n  the file browser's root: {', '.join(result['root'])}\n"
          f"  screenshots: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
