"""lib.grade and lib.seeds on real smoke runs of notebook 03: three seeds, and three fake submissions made from this
repository (honest, doctored figure, broken notebook) graded through the sequential and the Ray path."""
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import pytest

from conftest import ROOT
from lib import grade, seeds

pytestmark = pytest.mark.slow  # every test here reruns notebook 03 (or reads what the module's reruns wrote)
STEM = "03_cifar10_resnet"
SEEDS = [0, 1, 2]
SNAPSHOTS = {}  # submissions folder -> its files before grading


def _env():
    """The environment of a subprocess that must import this checkout's lib (never another's)."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1", "OMP_WAIT_POLICY": "PASSIVE"}


@pytest.fixture(scope="module")
def seed_runs(tmp_path_factory, demo_root):
    """Notebook 03's smoke run with seeds 0, 1 and 2 through `python -m lib.runbook --seeds`."""
    runs = tmp_path_factory.mktemp("seed_runs")
    command = [sys.executable, "-m", "lib.runbook", str(ROOT / "notebooks" / f"{STEM}.ipynb"), "--profile", "smoke",
               "--runs", str(runs), "--seeds"]
    # two runbooks at once (seeds 0 and 1, then seed 2) keep the three runs within the CI budget on 2 cores
    procs = [subprocess.Popen(command + [*map(str, part)], cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for part in (SEEDS[:2], SEEDS[2:])]
    for proc in procs:
        output = proc.communicate(timeout=600)[0]
        assert proc.returncode == 0, output[-3000:]
    return runs


def checkout(dest):
    """A copy of this repository's files as git sees them (tracked and new, not ignored): a fork's checkout."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


def claim(root, metrics, change=None):
    """Commit `metrics` (a metrics.json tree) as the submission's smoke claim, after `change(headline)`."""
    tree = json.loads(json.dumps(metrics))
    if change:
        change(tree["headline"])
    folder = root / "results" / "smoke" / STEM
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(tree))


def doctor(headline):
    """The doctored claim: test accuracy 25 points off what the notebook produces."""
    headline["test_acc"] += 0.25 if headline["test_acc"] < 0.5 else -0.25


@pytest.fixture(scope="module")
def submissions(tmp_path_factory, seed_runs):
    """honest (claims seed 0's own smoke run), doctored (its test_acc moved), broken (a bad committed lr)."""
    subs = tmp_path_factory.mktemp("submissions")
    metrics = json.loads((seed_runs / "seed0" / STEM / "metrics.json").read_text())
    for name in ("honest", "doctored", "broken"):
        claim(checkout(subs / name), metrics, doctor if name == "doctored" else None)
    config = subs / "broken" / "configs" / STEM / "smoke.yaml"
    config.write_text(config.read_text() + "lr: -1.0\n")  # the notebook's parameter check raises on it
    SNAPSHOTS[str(subs)] = snapshot(subs)
    return subs


def snapshot(folder):
    """{path: (size, modification time)} of everything under folder, to see that nothing was written there."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def read_book(out):
    """The gradebook CSV's rows."""
    with open(out / "gradebook.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def grade_into(out, subs, *extra):
    """Run the grader on the smoke profile, seed 0, notebook 03; return its exit code."""
    return grade.main([str(subs), "--notebooks", "03", "--profile", "smoke", "--seed", "0", "--out", str(out),
                       "--time-limit", "300", *extra])


def check_book(out, subs):
    """The gradebook flags exactly the doctored and the broken submission, for the right reasons."""
    rows = read_book(out)
    assert {r["submission"] for r in rows} == {"honest", "doctored", "broken"}
    assert {r["submission"] for r in rows if r["within_tolerance"] != "True"} == {"doctored", "broken"}
    honest = {r["metric"]: r for r in rows if r["submission"] == "honest"}
    assert set(honest) == {"test_acc", "best_val_acc"} and all(r["verdict"] == "ok" for r in honest.values())
    assert all(float(r["seconds"]) > 0 for r in honest.values())
    doctored = {r["metric"]: r for r in rows if r["submission"] == "doctored"}
    assert doctored["test_acc"]["verdict"] == "DIFFERS" and abs(float(doctored["test_acc"]["difference"])) > 0.2
    assert doctored["best_val_acc"]["verdict"] == "ok"  # only the doctored figure is flagged
    broken = [r for r in rows if r["submission"] == "broken"]
    assert broken and all(r["verdict"] == "run failed" and r["rerun"] == "" for r in broken)
    assert "lr" in broken[0]["error"] and os.path.isfile(broken[0]["executed_notebook"])
    assert "DIFFERS" in (out / "gradebook.html").read_text()
    assert snapshot(subs) == SNAPSHOTS[str(subs)], "the grader wrote into a submission"


def test_seed_statistics_match_a_hand_computation(seed_runs):
    values = [json.loads((seed_runs / f"seed{s}" / STEM / "metrics.json").read_text())["headline"] for s in SEEDS]
    for metric in ("test_acc", "best_val_acc"):
        xs = [v[metric] for v in values]
        mean = sum(xs) / 3
        std = (sum((x - mean) ** 2 for x in xs) / 2) ** 0.5
        got = seeds.headline_stats(seed_runs)[STEM][metric]
        assert got.n == 3 and got.mean == pytest.approx(mean) and got.std == pytest.approx(std)
        assert std == pytest.approx(statistics.stdev(xs))
    assert len({v["test_acc"] for v in values} | {v["best_val_acc"] for v in values}) > 1, "the seeds changed nothing"
    assert any(" ± " in line and "(n=3)" in line for line in seeds.stats_lines(seed_runs))


def test_gradebook_flags_the_doctored_and_the_broken_submission(submissions, tmp_path_factory):
    out = tmp_path_factory.mktemp("grades") / "sequential"
    assert grade_into(out, submissions) == 1
    check_book(out, submissions)
    # same seed, same machine, same code: the honest claim is reproduced exactly
    assert all(float(r["difference"]) == 0 for r in read_book(out) if r["submission"] == "honest")
    markers = sorted(out.glob("runs/smoke/*/seed0/*.done.json"))
    assert len(markers) == 3
    stamps = [m.stat().st_mtime_ns for m in markers]
    started = time.perf_counter()
    assert grade_into(out, submissions) == 1  # a second grading skips the finished reruns
    assert time.perf_counter() - started < 20 and [m.stat().st_mtime_ns for m in markers] == stamps
    check_book(out, submissions)


def test_gradebook_through_ray_runs_two_reruns_at_once(submissions, tmp_path_factory):
    pytest.importorskip("ray", reason="the optional Ray extra: pip install -r requirements-ray.txt")
    out = tmp_path_factory.mktemp("grades") / "ray"
    assert grade_into(out, submissions, "--ray", "--ray-cpus", "2", "--cpus-per-run", "1") == 1
    check_book(out, submissions)
    honest, doctored = (json.loads((out / "runs" / "smoke" / s / "seed0" / f"{STEM}.done.json").read_text())
                        for s in ("honest", "doctored"))
    assert honest["started"] < doctored["ended"] and doctored["started"] < honest["ended"], \
        "the two full reruns did not overlap: Ray ran them one after another"


def test_a_hanging_rerun_is_cut_at_the_time_limit_and_gets_its_row(demo_root, tmp_path):
    subs = tmp_path / "subs"
    checkout(subs / "hangs")  # with no claimed results either: its row says both
    path = subs / "hangs" / "notebooks" / f"{STEM}.ipynb"
    notebook = json.loads(path.read_text())
    at = next(i for i, c in enumerate(notebook["cells"]) if "parameters" in c["metadata"].get("tags", []))
    notebook["cells"].insert(at + 1, {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
                                      "source": "import time\ntime.sleep(3600)"})
    path.write_text(json.dumps(notebook))
    started = time.perf_counter()
    assert grade.main([str(subs), "--notebooks", "03", "--profile", "smoke", "--out", str(tmp_path / "out"),
                       "--time-limit", "15"]) == 1
    assert time.perf_counter() - started < 45
    rows = read_book(tmp_path / "out")
    assert len(rows) == 1 and rows[0]["verdict"] == "timed out" and "time limit" in rows[0]["error"]
    assert rows[0]["claimed"] == "" and rows[0]["within_tolerance"] == "False"
    left = [pid for pid in grade._descendants(os.getpid()) if b"ipykernel" in _cmdline(pid)]
    assert not left, "the killed rerun left its kernel behind"


def _cmdline(pid):
    """A process's command line, b'' once it is gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def test_the_report_shows_mean_and_std_for_a_study_run_with_several_seeds(seed_runs, tmp_path):
    import papermill
    executed = tmp_path / "report.ipynb"
    papermill.execute_notebook(str(ROOT / "notebooks" / "05_results_report.ipynb"), str(executed),
                               parameters={"profile": "smoke", "runs_dir": str(seed_runs / "seed0"),
                                           "out_dir": str(tmp_path / "report")}, log_output=False, progress_bar=False)
    shown = executed.read_text()
    mean = statistics.fmean(json.loads((seed_runs / f"seed{s}" / STEM / "metrics.json").read_text())["headline"]
                            ["test_acc"] for s in SEEDS)
    assert "(n=3)" in shown and f"{mean:.2%} ± " in shown and "Seeds 0, 1, 2" in shown


def test_each_profile_grades_into_its_own_folder_and_notebook_numbers_are_checked_first(tmp_path):
    smoke, demo = (grade.unit_paths(str(tmp_path), p, "alice", STEM, 0)[3] for p in ("smoke", "demo"))
    assert smoke != demo  # a demo grading never skips a unit because a smoke grading finished it
    assert grade.notebook_numbers(["3", "03", "01"], str(ROOT)) == ["03", "01"]
    with pytest.raises(SystemExit, match="--notebooks 99: no such notebook .* give one of 01 02 03 04 05"):
        grade.notebook_numbers(["03", "99"], str(ROOT))
    (tmp_path / "subs" / "alice" / "notebooks").mkdir(parents=True)
    with pytest.raises(SystemExit, match="--notebooks 99"):
        grade.main([str(tmp_path / "subs"), "--notebooks", "99", "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_out_inside_a_linked_submission_is_refused(tmp_path):
    (tmp_path / "elsewhere" / "bob" / "notebooks").mkdir(parents=True)
    (tmp_path / "subs").mkdir()
    (tmp_path / "subs" / "bob").symlink_to(tmp_path / "elsewhere" / "bob")
    out = tmp_path / "elsewhere" / "bob" / "grades"
    with pytest.raises(ValueError, match="lies inside submission bob"):
        grade.main([str(tmp_path / "subs"), "--out", str(out)])
    assert not out.exists()
