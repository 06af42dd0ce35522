"""`python -m lib.grade SUBMISSIONS --notebooks 03 --profile demo`: rerun each submission's notebooks, check its claims.

Each folder inside SUBMISSIONS is a checkout of this repository (a student's fork). For every submission, notebook
and seed (a unit) the notebook runs with papermill in a subprocess of its own: working folder and PYTHONPATH the
submission's root, so it imports the submission's own `lib`; `-p profile <profile> -p seed <N>`; its out_dir, the
executed notebook and the log inside the grader's --out folder (nothing is written into a submission); data paths
of the profile that start with data/ are read from --data (default: this checkout's data/). A unit past
--time-limit is killed with everything it started. On the CPU a rerun uses the thread count the claim recorded
(its environment.cpu_threads): results depend on it. The rerun's headline is compared with what the submission
committed in results/<profile>/<notebook>/metrics.json (lib.results' schema), within the tolerances of --tolerances,
else the submission's results/<profile>/tolerances.yaml, else DEFAULT_TOLERANCE (lib.gradebook).

The gradebook (<out>/gradebook.csv and .html) has one row per submission, notebook, seed and metric; a failed,
timed-out or claim-less unit gets its rows and never stops the others. Each finished unit leaves a done marker
(<out>/runs/<profile>/<submission>/seed<N>/<notebook>.done.json, written atomically): a second call with the same
profile skips it, so an interrupted grading resumes where it stopped; another profile reruns into its own folder.
`--ray` runs the units as Ray tasks (lib.grade_ray).

A submission's notebooks run with the grader's rights: grade inside a container or a throwaway machine.
"""
import argparse
import os
import signal
import subprocess
import sys
import time

import yaml

from lib import files, gradebook, results
from lib.utils import repo_path

from . import utils

PROFILES = ("smoke", "demo", "cpu")


def submissions(folder):
    """The submission folders inside `folder` (any folder holding notebooks/), by name."""
    found = sorted(d.name for d in os.scandir(folder) if d.is_dir() and not d.name.startswith("."))
    return {name: os.path.join(folder, name) for name in found if os.path.isdir(os.path.join(folder, name,
                                                                                               "notebooks"))}


def notebook_stem(root, number):
    """The stem of notebook `number` ("03" or a full stem) in a checkout, or None when it has none."""
    names = sorted(n for n in os.listdir(os.path.join(root, "notebooks")) if n.endswith(".ipynb"))
    match = [n for n in names if n == f"{number}.ipynb" or n.startswith(f"{number}_")]
    return os.path.splitext(match[0])[0] if match else None


def unit_paths(out, profile, submission, stem, seed):
    """(out_dir, executed notebook, log, done marker) of one unit inside the grader's output folder."""
    base = os.path.join(out, "runs", profile, submission, f"seed{seed}")  # a demo grading never reuses a smoke one
    return (os.path.join(base, stem), os.path.join(base, f"{stem}.ipynb"), os.path.join(base, f"{stem}.log"),
            os.path.join(base, f"{stem}.done.json"))


def parameters(root, stem, profile, seed, out_dir, data):
    """The unit's papermill parameters: profile, seed, out_dir, and the profile's data/ paths read from `data`."""
    import papermill
    declared = set(papermill.inspect_notebook(os.path.join(root, "notebooks", f"{stem}.ipynb")))
    params = {"profile": profile, "out_dir": out_dir}
    if "seed" in declared:
        params["seed"] = seed
    config = os.path.join(root, "configs", stem, f"{profile}.yaml")
    try:
        with open(config, encoding="utf-8") as fh:
            values = yaml.safe_load(fh) or {}
    except (OSError, yaml.YAMLError):
        values = {}  # the notebook itself says what is wrong with its profile when it runs
    for name, value in values.items() if isinstance(values, dict) else ():
        if name in declared and isinstance(value, str) and value.startswith("data/"):
            params[name] = os.path.join(data, value[len("data/"):])
    if "resume" in declared and os.path.isdir(out_dir):
        params["resume"] = True  # an interrupted grading: the unit's own partial run, resumed
    return params


def notebook_numbers(numbers, root):
    """--notebooks as the two-digit numbers of `root`'s notebooks ("3" is "03"), once each; unknown ones refused."""
    wanted = list(dict.fromkeys(n.zfill(2) if n.isdigit() else n for n in numbers))
    unknown = [n for n in wanted if notebook_stem(root, n) is None]
    if unknown:
        known = sorted(n.split("_")[0] for n in os.listdir(os.path.join(root, "notebooks")) if n.endswith(".ipynb"))
        raise SystemExit(f"--notebooks {' '.join(unknown)}: no such notebook in {os.path.join(root, 'notebooks')}; "
                         f"give one of {' '.join(known)}")
    return wanted


def unit_list(subs, numbers, seeds, out, profile):
    """Every (submission, root, stem or None, seed) unit, and the done-marker path of each."""
    units = []
    for name, root in subs.items():
        for number in numbers:
            stem = notebook_stem(root, number)
            for seed in seeds:
                units.append({"submission": name, "root": root, "number": number, "stem": stem, "seed": seed,
                              "done": unit_paths(out, profile, name, stem or number, seed)[3]})
    return units


def _descendants(pid):
    """Every process started, directly or not, by `pid` (the kernel sits in a session of its own)."""
    children = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(proc):
    """Kill a subprocess and everything it started; children first, found before the parent dies."""
    for pid in _descendants(proc.pid) + [proc.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    proc.wait()


def error_line(executed, log):
    """A failed run's last error line: the executed notebook's error output, else the log's last line."""
    import json
    try:
        with open(executed, encoding="utf-8") as fh:
            cells = json.load(fh)["cells"]
        for cell in cells:
            for output in cell.get("outputs", []):
                if output.get("output_type") == "error":
                    # the message's lines in one (a parameter check names the parameter on its second line)
                    return " ".join(f"{output['ename']}: {output['evalue']}".split())[:300]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        with open(log, encoding="utf-8", errors="replace") as fh:
            lines = [line.strip() for line in fh if line.strip()]
        return lines[-1][:300] if lines else "no output"
    except OSError:
        return "no log"


def run_unit(unit, profile, out, data, time_limit, threads=None):
    """Rerun one unit in a subprocess; return its record (status ok/failed/timeout/missing, seconds, error, ...)."""
    name, root, stem, seed = unit["submission"], unit["root"], unit["stem"], unit["seed"]
    record = {"submission": name, "notebook": stem or unit["number"], "seed": seed, "status": "missing",
              "seconds": 0.0, "error": "", "executed": "", "rerun": {}, "started": time.time()}
    if stem is None:
        record["error"] = f"{root}/notebooks has no notebook {unit['number']}_*.ipynb"
        return {**record, "ended": time.time()}
    out_dir, executed, log, _ = unit_paths(out, profile, name, stem, seed)
    os.makedirs(os.path.dirname(out_dir), exist_ok=True)
    params_file = os.path.join(os.path.dirname(out_dir), f".{stem}.parameters.yaml")
    files.atomic_write_text(params_file, yaml.safe_dump(parameters(root, stem, profile, seed, out_dir, data)))
    # the submission's own lib first; no __pycache__ written into the submission
    env = {**os.environ, "PYTHONPATH": os.path.abspath(root), "TQDM_DISABLE": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    # CPU arithmetic depends on the thread count (a smoke run with 1 thread lands points away from one with 2), so
    # a rerun uses the count the claim recorded; without a claim, what it was given (Ray: its CPUs)
    threads = claimed_threads(root, profile, stem) or threads
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    record["threads"] = threads
    command = [sys.executable, "-m", "papermill", os.path.join(root, "notebooks", f"{stem}.ipynb"), executed,
               "-f", params_file, "--cwd", os.path.abspath(root), "--no-progress-bar", "--log-level", "ERROR"]
    started = time.perf_counter()
    with files.atomic_open(log, "w", encoding="utf-8") as fh:  # while it runs: the .tmp-*-<stem>.log beside it
        proc = subprocess.Popen(command, cwd=root, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            code = proc.wait(timeout=time_limit)
        except subprocess.TimeoutExpired:
            kill_tree(proc)
            code = None
        except BaseException:  # Ctrl-C or a stopped Ray worker: its own session would outlive the grader
            kill_tree(proc)
            raise
    record.update(seconds=round(time.perf_counter() - started, 1), executed=executed, ended=time.time())
    return finish_record(record, code, out_dir, executed, log, time_limit)


def claimed_threads(root, profile, stem):
    """The CPU threads the submission's claimed run used (its metrics.json's environment), or None."""
    try:
        threads = results.read(os.path.join(root, "results", profile, stem, results.FILE_NAME)).environment.get(
            "cpu_threads")
    except results.ResultsError:
        return None
    return threads if isinstance(threads, int) and not isinstance(threads, bool) and threads > 0 else None


def finish_record(record, code, out_dir, executed, log, time_limit):
    """Fill a unit's status, error and rerun headline from how its subprocess ended."""
    if code is None:
        record.update(status="timeout", error=f"killed at the time limit ({time_limit:g} s); see {log}")
    elif code != 0:
        record.update(status="failed", error=error_line(executed, log))
    else:
        try:
            record.update(status="ok", rerun=dict(results.read(out_dir).headline))
        except results.ResultsError as err:
            record.update(status="failed", error=str(err))
    return record


def claims(root, profile, stem):
    """(claimed headline or None, tolerances {metric: value} or None, why no claim) from a submission's results."""
    path = os.path.join(root, "results", profile, stem or "-", results.FILE_NAME)
    try:
        claimed = dict(results.read(path).headline)
    except results.ResultsError as err:
        claimed, why = None, str(err)
    else:
        why = ""
    tol_path = os.path.join(root, "results", profile, "tolerances.yaml")
    try:
        with open(tol_path, encoding="utf-8") as fh:
            tolerances = (yaml.safe_load(fh) or {}).get(stem)
    except (OSError, yaml.YAMLError, AttributeError):
        tolerances = None
    return claimed, tolerances if isinstance(tolerances, dict) else None, why


def run_sequential(pending, profile, out, data, time_limit):
    """Run the pending units one after another, each leaving its done marker as it ends."""
    for unit in pending:
        print(f"== {unit['submission']} {unit['stem'] or unit['number']} seed {unit['seed']}", flush=True)
        record = run_unit(unit, profile, out, data, time_limit)
        files.atomic_write_json(unit["done"], record)
        print(f"   {record['status']} in {record['seconds']:.0f} s {record['error']}", flush=True)


def check_out(out, folder, subs):
    """Refuse an output folder that is, holds or lies inside the submissions (lib.files' rule)."""
    # each submission too: one may be a link to a checkout elsewhere, which the folder check alone would not see
    sources = {"the submissions folder": folder, **{f"submission {name}": root for name, root in subs.items()}}
    files.check_not_source(out, sources, "--out folder")
    os.makedirs(out, exist_ok=True)


def parse(argv):
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m lib.grade", description=__doc__.splitlines()[0])
    parser.add_argument("submissions", help="a folder of checkouts, one per submission")
    parser.add_argument("--notebooks", nargs="+", default=["03"], help="notebook numbers, e.g. 01 03 (default 03)")
    parser.add_argument("--profile", default="demo", help=f"the profile to rerun, e.g. {', '.join(PROFILES)}")
    parser.add_argument("--seed", nargs="+", type=int, default=[0], help="seed(s) to rerun with (default 0)")
    parser.add_argument("--time-limit", type=float, default=3600, help="seconds per rerun before it is killed")
    parser.add_argument("--out", default="grades", help="the grader's folder for reruns and the gradebook")
    parser.add_argument("--data", default=repo_path("data"), help="where data/ paths are read (default: ./data)")
    parser.add_argument("--tolerances", help="a tolerances.yaml that overrides the submissions' own")
    parser.add_argument("--default-tolerance", type=float, default=gradebook.DEFAULT_TOLERANCE)
    parser.add_argument("--ray", nargs="?", const="local", help="run the reruns as Ray tasks; optional address")
    parser.add_argument("--cpus-per-run", type=int, default=1, help="Ray: CPUs each rerun requests (default 1)")
    parser.add_argument("--ray-cpus", type=int, help="Ray: CPUs of the local instance (default: all)")
    return parser.parse_args(argv)


def main(argv=None):
    """Grade every submission; print the gradebook's summary; exit 1 when any row is flagged."""
    args = parse(argv)
    if not os.path.isdir(args.submissions):
        raise SystemExit(f"{args.submissions}: no such folder; give the folder that holds one checkout per submission")
    subs = submissions(args.submissions)
    if not subs:
        raise SystemExit(f"{args.submissions}: no checkout inside (a submission is a folder holding notebooks/)")
    numbers = notebook_numbers(args.notebooks, repo_path("."))  # this checkout's notebooks: what is being graded
    out = os.path.abspath(args.out)
    check_out(out, args.submissions, subs)
    units = unit_list(subs, numbers, list(dict.fromkeys(args.seed)), out, args.profile)
    pending = [u for u in units if not os.path.isfile(u["done"])]
    print(f"{len(units)} reruns, {len(units) - len(pending)} finished earlier (skipped), {len(pending)} to run")
    if args.ray:
        from lib import grade_ray
        grade_ray.run_ray(pending, args.profile, out, os.path.abspath(args.data), args.time_limit,
                          None if args.ray == "local" else args.ray, args.cpus_per_run, args.ray_cpus)
    else:
        run_sequential(pending, args.profile, out, os.path.abspath(args.data), args.time_limit)
    rows = gradebook.build(units, args.profile, args.tolerances, args.default_tolerance, claims)
    csv_path, html_path = gradebook.write(out, rows, args.default_tolerance)
    flagged = [r for r in rows if not r["within_tolerance"]]
    print(f"gradebook: {csv_path}, {html_path}: {len(rows)} rows, {len(flagged)} flagged "
          f"({', '.join(sorted({r['submission'] for r in flagged})) or 'none'})")
    return 1 if flagged else 0


if __name__ == "__main__":
    sys.exit(utils.run_command(main, "python -m lib.grade"))
