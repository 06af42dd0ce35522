"""The grader's Ray path (`python -m lib.grade ... --ray [ADDRESS]`): each rerun a Ray task with a resource request.

A task asks for `--cpus-per-run` CPUs, and one GPU where the cluster has GPUs; Ray starts as many at once as the
nodes hold. Without an address a local Ray instance starts (of `--ray-cpus` CPUs, default all) and stops at the end;
with one, the grader joins that cluster and ships this package to its workers. The driver writes each unit's done
marker as its task returns, so an interrupted grading resumes from the finished ones. On a cluster the submissions,
the data and the --out folder must be on a file system every node mounts at the same path.
"""
import os

from lib import files, grade, search_ray


def import_ray():
    """Import ray, or explain how to install the optional extra."""
    try:
        import ray
    except ImportError as err:
        raise ImportError("--ray needs Ray, an optional extra: `pip install -r requirements-ray.txt` "
                          "(or `pip install -e .[ray]`); or leave --ray out to run the reruns one after another."
                          ) from err
    return ray


def task_resources(ray, cpus_per_run):
    """{'num_cpus': n, 'num_gpus': 0 or 1}: a GPU each where the cluster has GPUs; a ValueError if no node fits one."""
    try:
        need = search_ray.trial_resources(cpus_per_run, None, search_ray.live_nodes(ray))
    except ValueError as err:
        raise ValueError(str(err).replace("cpus_per_trial", "--cpus-per-run").replace("gpus_per_trial", "GPUs")
                         .replace("trial", "rerun")) from None
    return {"num_cpus": need["cpu"], "num_gpus": need["gpu"]}


def _rerun(unit, profile, out, data, time_limit, threads):
    """One rerun inside a Ray worker: the same subprocess as the sequential path."""
    return grade.run_unit(unit, profile, out, data, time_limit, threads=threads)


def run_ray(pending, profile, out, data, time_limit, address=None, cpus_per_run=1, local_cpus=None):
    """Run the pending units as Ray tasks; write each done marker from the driver as its task ends."""
    if not pending:
        return
    ray = import_ray()
    started_here = search_ray.start(ray, address, local_cpus)
    try:
        resources = task_resources(ray, cpus_per_run)
        task = ray.remote(**resources, max_retries=0)(_rerun)
        refs = {task.remote(u, profile, out, data, time_limit, resources["num_cpus"]): u for u in pending}
        print(f"Ray: {len(refs)} reruns, each {resources}", flush=True)
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            unit = refs.pop(ready[0])
            record = collect(ray, ready[0], unit)
            files.atomic_write_json(unit["done"], record)
            print(f"   {unit['submission']} {record['notebook']} seed {unit['seed']}: {record['status']} in "
                  f"{record['seconds']:.0f} s {record['error']}", flush=True)
    finally:
        if started_here:
            ray.shutdown()


def collect(ray, ref, unit):
    """A task's record, or a failed record naming Ray's error when the task itself died."""
    try:
        return ray.get(ref)
    except Exception as err:  # a worker lost or killed: the unit gets its row, the others go on
        last = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        return {"submission": unit["submission"], "notebook": unit["stem"] or unit["number"], "seed": unit["seed"],
                "status": "failed", "seconds": 0.0, "error": f"Ray task failed: {last}"[:300],
                "executed": os.path.join(os.path.dirname(unit["done"]), f"{unit['stem']}.ipynb"), "rerun": {}}
