"""A student's first run in JupyterLab, driven in headless Chromium: fresh clone, `make lab`, one edit, Run All.

Run by hand (not part of `make test`: it takes minutes and needs Chromium and Playwright):

    apt-get install -y chromium && pip install playwright       # any Python with Playwright will do
    python tests/lab_walkthrough.py --venv .venv 03 01 02       # screenshots and a verdict per notebook

It clones this repository into a temporary folder (committed files only, as a student gets them), links --venv as
the clone's .venv so the first install (minutes, several GB) is skipped, starts `make lab` there (which writes the
demo data), and for each notebook: opens it, adds `profile = "demo"` at the end of the parameters cell, runs all
cells, and waits for "all checks passed" or an error. It then saves, reloads the page and counts the stderr outputs
(JupyterLab's pink bands) before and after. Screenshots go to --shots. Exit status 0 when every notebook passed.

    python tests/lab_walkthrough.py --venv .venv --mistake 03 01 02

types a misspelt profile name instead (`profile = "dmeo"`), which fails in the second code cell, and passes when the
error is on screen once Run All has stopped (JupyterLab itself leaves the view at the notebook's end; lib.lab).
"""
import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

from playwright.sync_api import sync_playwright

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = {"01": "01_two_layer_imagenet_mini", "02": "02_resnet50_cbam_100class", "03": "03_cifar10_resnet"}
STDERR = '[data-mime-type="application/vnd.jupyter.stderr"]'
# JupyterLab renders an error output with the stderr renderer too: what tells it apart is IPython's traceback text
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|Cell In\[")


def start_lab(clone, port):
    """`make lab` in the clone, without a browser or token, on `port`; returns the process once the server answers."""
    env = dict(os.environ, PYTHONPATH=clone)  # the linked venv's editable install points at another checkout
    args = f"--no-browser --port {port} --ServerApp.token='' --ServerApp.password=''"
    # -o: the linked venv counts as installed; remaking it would `pip install -e` the clone and leave the caller's
    # venv pointing at a temporary folder that is deleted afterwards
    lab = subprocess.Popen(["make", "-o", ".venv/.installed", "lab", f"LAB_ARGS={args}"], cwd=clone, env=env,
                           start_new_session=True,
                           stdout=open(os.path.join(clone, "lab.log"), "w"), stderr=subprocess.STDOUT)
    for _ in range(180):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/lab", timeout=2)
            return lab
        except OSError:
            time.sleep(1)
    raise SystemExit(f"JupyterLab did not answer on port {port} in 3 minutes; see {clone}/lab.log")


def error_in_view(page):
    """True when the end of the first error output lies inside the browser's window."""
    return page.locator(STDERR, has_text=TRACEBACK).first.evaluate(
        "e => { const r = e.getBoundingClientRect(); return r.bottom > 0 && r.bottom <= window.innerHeight; }")


def run_notebook(page, port, stem, shots, timeout_s, line='profile = "demo"'):
    """Open, add `line` to the parameters cell, Run All, wait; screenshots before and after a reload.

    Returns (verdict, stderr bands after the run, after a reopen, note); the verdict is "passed", "error in view",
    "error out of view" or None (no end in timeout_s).
    """
    page.goto(f"http://127.0.0.1:{port}/lab/tree/notebooks/{stem}.ipynb?reset")  # only this tab open
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
    editor = page.locator(".jp-CodeCell").first.locator(".cm-content")  # the parameters cell
    editor.click()
    page.keyboard.press("Control+End")
    page.keyboard.press("Enter")
    page.keyboard.type(line)
    page.keyboard.press("Escape")
    page.click(".lm-MenuBar-itemLabel:text-is('Run')")
    page.click(".lm-Menu-itemLabel:text-is('Run All Cells')")
    start, verdict = time.time(), None
    while time.time() - start < timeout_s and verdict is None:
        page.wait_for_timeout(2000)
        if page.locator(".jp-OutputArea-output", has_text="all checks passed").count():
            verdict = "passed"
        elif page.locator(STDERR, has_text=TRACEBACK).count():
            page.wait_for_timeout(4000)  # lib.lab's script scrolls half a second after the error, smoothly
            verdict = "error in view" if error_in_view(page) else "error out of view"
            # text_content: inner_text is empty for a cell off screen
            note = page.locator(STDERR, has_text=TRACEBACK).first.text_content().strip().splitlines()[-1][:300]
    page.screenshot(path=os.path.join(shots, f"{stem}-after-run.png"))
    bands = page.locator(STDERR).count()
    page.keyboard.press("Control+s")
    page.wait_for_timeout(2000)
    page.reload()
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
    page.wait_for_timeout(3000)
    page.screenshot(path=os.path.join(shots, f"{stem}-after-reopen.png"))
    reopened = page.locator(STDERR).count()
    seconds = time.time() - start
    said = f"{verdict}: {note}" if verdict and verdict.startswith("error") else verdict or f"no end in {timeout_s} s"
    return verdict, bands, reopened, f"{said} ({seconds:.0f} s)"


def main(argv=None):
    """Clone, start Lab, walk each notebook through; print one line per notebook."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", default=["03"], choices=sorted(NOTEBOOKS))
    parser.add_argument("--venv", default=os.path.join(REPO, ".venv"), help="linked as the clone's .venv")
    parser.add_argument("--shots", default=os.path.join(tempfile.gettempdir(), "lab-walkthrough"))
    parser.add_argument("--port", type=int, default=8899)
    parser.add_argument("--timeout", type=int, default=900, help="seconds per notebook")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--mistake", action="store_true", help='type profile = "dmeo": the error must be in view')
    args = parser.parse_args(argv)
    os.makedirs(args.shots, exist_ok=True)
    clone = os.path.join(tempfile.mkdtemp(prefix="lab-walkthrough-"), "repo")
    subprocess.run(["git", "clone", "-q", REPO, clone], check=True)
    os.symlink(os.path.realpath(args.venv), os.path.join(clone, ".venv"))
    print(f"fresh clone: {clone}; make lab (demo data first) ...", flush=True)
    lab = start_lab(clone, args.port)
    failed = 0
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            for number in args.notebooks:
                line = 'profile = "dmeo"' if args.mistake else 'profile = "demo"'
                verdict, bands, reopened, note = run_notebook(page, args.port, NOTEBOOKS[number], args.shots,
                                                              args.timeout, line)
                failed += verdict != ("error in view" if args.mistake else "passed")
                print(f"{NOTEBOOKS[number]}: {note}; stderr outputs (pink) after Run All {bands}, after a reopen "
                      f"{reopened}", flush=True)
            browser.close()
    finally:
        os.killpg(lab.pid, signal.SIGTERM)
    print(f"screenshots in {args.shots}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
