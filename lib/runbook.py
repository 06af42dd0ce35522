"""`python -m lib.runbook`: run notebooks on one profile with papermill, quietly, as `make run` and `make report` do.

Each notebook runs with `-p profile <profile> -p out_dir <runs>/<stem>` into `<runs>/<stem>.ipynb`; what it prints
(the parameters, one line per finished epoch, its results) streams to the terminal, without papermill's per-cell
bar or the kernel's start-up log. On a second call a study that finished (its metrics.json exists) is skipped and a
partial one resumed; `--fresh` runs every notebook again with overwrite=True. `--seeds 0 1 2` runs each notebook
once per seed (`-p seed N`) into `<runs>/seed<N>/<stem>`, skipping finished ones the same way; `python -m lib.seeds`
turns those into mean ± standard deviation (n).

It works from any folder: the default runs folder (runs/<profile>) and the study notebooks are found under the
repository root; a --runs or notebook path you give is taken from your current folder, as any command's argument is.
"""
import argparse
import glob
import os
import sys
import time

from .utils import repo_path, run_command

REPORT = "05_results_report"
# the kernel's own log (e.g. "Kernel is running over TCP without encryption") says nothing a student can act on
KERNEL_ARGS = ["--IPKernelApp.log_level=ERROR"]


def studies():
    """The study notebooks in order (the report, which reads their results, is not one)."""
    paths = sorted(glob.glob(repo_path("notebooks/[0-9][0-9]_*.ipynb")))
    return [p for p in paths if not os.path.basename(p).startswith(REPORT)]


def plan(notebook, profile, runs, fresh=False):
    """(parameters, reason to skip or None) for one notebook: resume a partial run, skip a finished one."""
    import papermill
    stem = os.path.splitext(os.path.basename(notebook))[0]
    out_dir = os.path.join(runs, stem)
    declared = set(papermill.inspect_notebook(notebook))
    parameters = {"profile": profile, "out_dir": out_dir}
    if "runs_dir" in declared:
        parameters["runs_dir"] = runs
    if "resume" not in declared:  # the report: nothing to resume, rebuilt every time
        return parameters, None
    if fresh:
        return {**parameters, "overwrite": True}, None
    if os.path.isfile(os.path.join(out_dir, "metrics.json")):
        return parameters, f"finished earlier in {out_dir} (`make run FRESH=1` runs it again)"
    if os.path.isdir(out_dir):
        parameters["resume"] = True
    return parameters, None


def run_one(notebook, parameters, output):
    """Execute one notebook with papermill, streaming its stdout; return None or the error line."""
    import papermill
    try:
        papermill.execute_notebook(notebook, output, parameters=parameters, progress_bar=False, log_output=False,
                                   stdout_file=sys.stdout, extra_arguments=KERNEL_ARGS)
    except papermill.PapermillExecutionError as err:
        return f"{err.ename}: {err.evalue}"
    return None


def run_all(notebooks, profile, runs, fresh=False, seed=None):
    """Run notebooks in order into runs (skipping finished ones, resuming partial ones); 1 at the first failure."""
    os.makedirs(runs, exist_ok=True)
    for notebook in notebooks:
        stem = os.path.splitext(os.path.basename(notebook))[0]
        parameters, skip = plan(notebook, profile, runs, fresh)
        label = profile if seed is None else f"{profile}, seed {seed}"
        if skip:
            print(f"== {stem} ({label}): {skip}", flush=True)
            continue
        if seed is not None and "seed" in parameters_of(notebook):
            parameters["seed"] = seed
        print(f"== {stem} ({label}" + (", resuming" if parameters.get("resume") else "") + ")", flush=True)
        started = time.perf_counter()
        error = run_one(notebook, parameters, os.path.join(runs, f"{stem}.ipynb"))
        if error:
            print(f"== {stem} FAILED after {time.perf_counter() - started:.0f} s: {error}\n"
                  f"   the executed notebook, with the traceback: {os.path.join(runs, stem + '.ipynb')}", flush=True)
            return 1
        print(f"== {stem} done in {time.perf_counter() - started:.0f} s", flush=True)
    return 0


def parameters_of(notebook):
    """The names a notebook's parameters cell declares."""
    import papermill
    return set(papermill.inspect_notebook(notebook))


def main(argv=None):
    """Run the notebooks given (default: every study) on a profile, once per seed if given; exit 1 at a failure."""
    parser = argparse.ArgumentParser(prog="python -m lib.runbook", description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="default: every study notebook (01-04)")
    parser.add_argument("--profile", default="demo", help="configs/<notebook>/<profile>.yaml (default: demo)")
    parser.add_argument("--runs", help="folder for the runs (default: runs/<profile>)")
    parser.add_argument("--fresh", action="store_true", help="run finished studies again (overwrite=True)")
    parser.add_argument("--seeds", nargs="+", type=int, metavar="N",
                        help="run each notebook once per seed, into <runs>/seed<N>/ (python -m lib.seeds reads them)")
    args = parser.parse_args(argv)
    # no widget frontend is attached to a headless kernel: bars would be saved as dead widgets ("model not found")
    os.environ.setdefault("TQDM_DISABLE", "1")
    # absolute, so the notebook (which anchors relative paths at the repository root) writes where this checks
    runs = os.path.abspath(args.runs) if args.runs else repo_path(os.path.join("runs", args.profile))
    notebooks = [os.path.abspath(n) for n in args.notebooks] or studies()
    for seed in args.seeds or [None]:
        folder = runs if seed is None else os.path.join(runs, f"seed{seed}")
        if run_all(notebooks, args.profile, folder, args.fresh, seed):
            return 1
    return 0

if __name__ == "__main__":
    sys.exit(run_command(main, "python -m lib.runbook"))
