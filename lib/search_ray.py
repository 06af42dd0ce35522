"""Study 04's Ray Tune backend: trial resources checked against the cluster before anything is queued, one Tune
trial per planned design that reports after every epoch, and ASHA to stop weak trials early. Each trial's row goes
to lib.search's trial log when it ends, from the driver, so the log and its resumption work as with backend='local'.
"""
import os

import torch

from . import search

RAY_HINT = ("backend='ray' needs Ray Tune, an optional extra: `pip install -e .[ray]` or "
            "`pip install -r requirements-ray.txt`; or use backend='local'.")
# ASHA keeps the best third at each rung (epochs 1, 3, 9, ...); Tune's default of 4 prunes harder than ten-epoch
# trials ranked on noisy early accuracies deserve
ASHA_REDUCTION_FACTOR = 3


def import_ray():
    """Import ray and ray.tune, or explain how to install the optional extra."""
    try:
        import ray
        from ray import tune
    except ImportError as err:
        raise ImportError(RAY_HINT) from err
    return ray, tune


def start(ray, address, local_cpus=None):
    """Start or join Ray; True when this call started it (and so must stop it)."""
    if ray.is_initialized():
        return False
    import lib
    # a cluster's workers need this package: ship it with the job instead of asking every node to install it
    runtime_env = {"py_modules": [lib]} if address else None
    ray.init(address=address, num_cpus=None if address else local_cpus, include_dashboard=False,
             log_to_driver=False, runtime_env=runtime_env)
    return True


def live_nodes(ray):
    """The resource dicts of the cluster's live nodes."""
    return [n["Resources"] for n in ray.nodes() if n["Alive"]]


def trial_resources(cpus_per_trial, gpus_per_trial, nodes):
    """What each trial reserves, {'cpu': n, 'gpu': m}, or a ValueError at once if no node of `nodes` could run one.

    nodes: the live nodes' resource dicts (ray.nodes()'s 'Resources'). gpus_per_trial None means 1 if a node has a
    GPU, else 0: the cluster decides, never the driver's own device (a CPU-only head node drives GPU workers).
    Ray itself would queue a trial no node can hold and warn every minute for ever.
    """
    cpus = max(1, int(cpus_per_trial))
    if gpus_per_trial is None:
        gpus_per_trial = 1 if any(n.get("GPU", 0) > 0 for n in nodes) else 0
    if not any(n.get("CPU", 0) >= cpus and n.get("GPU", 0) >= gpus_per_trial for n in nodes):
        raise ValueError(_shortfall(cpus, gpus_per_trial, nodes))
    return {"cpu": cpus, "gpu": gpus_per_trial}


def _shortfall(cpus, gpus, nodes):
    """Why no node can run a trial of `cpus` CPUs and `gpus` GPUs, with the parameter to change."""
    most_cpus = max((n.get("CPU", 0) for n in nodes), default=0)
    most_gpus = max((n.get("GPU", 0) for n in nodes), default=0)
    have = (f"the Ray cluster's {len(nodes)} live node(s) have at most {most_cpus:g} CPUs and {most_gpus:g} GPUs "
            f"each, so no trial could ever start")
    if gpus > most_gpus:
        return (f"gpus_per_trial={gpus:g} asks for more GPUs than any node has ({have}). Use gpus_per_trial=0 on a "
                "CPU-only cluster, None (1 if the cluster has GPUs, else 0), or a ray_address of a cluster with GPUs.")
    if cpus > most_cpus:
        return (f"cpus_per_trial={cpus} asks for more CPUs than any node has ({have}). Use cpus_per_trial="
                f"{max(1, int(most_cpus))} or fewer.")
    return (f"cpus_per_trial={cpus} with gpus_per_trial={gpus:g}: no single node has both ({have}). Lower one of "
            "them.")


def run_ray(pending, settings, tensors, record, trial_fn, *, cpus_per_trial, gpus_per_trial, ray_address, ray_dir,
            scheduler):
    """Run the pending trials as Ray Tune trials, one Tuner, recording each row as its trial ends."""
    ray, tune = import_ray()
    started_here = start(ray, ray_address)
    try:
        resources = trial_resources(cpus_per_trial, gpus_per_trial, live_nodes(ray))
        trainable = _trainable(tune, pending, settings, trial_fn, resources["cpu"])
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(trainable, tensors=tensors), resources),
            param_space={"trial": tune.grid_search(sorted(t["trial"] for t in pending))},
            tune_config=tune.TuneConfig(scheduler=_scheduler(tune, scheduler, settings.epochs)),
            run_config=tune.RunConfig(name="random_search", storage_path=os.path.abspath(ray_dir),
                                      callbacks=[_recorder(tune, record, settings.epochs)], verbose=0))
        results = tuner.fit()
        errors = [str(r.error).splitlines()[-1] for r in results if r.error]
        if errors:
            raise RuntimeError(f"{len(errors)} Ray trials failed, e.g.: {errors[0]}")
    finally:
        if started_here:
            ray.shutdown()


def _trainable(tune, pending, settings, trial_fn, threads):
    """The Tune function trainable: run_trial on the trial its config names, reporting the row after every epoch."""
    by_id = {t["trial"]: t for t in pending}

    def trainable(config, tensors=None):
        torch.set_num_threads(threads)
        reported = []

        def report(row):
            reported.append(row)
            tune.report(row)

        row = search.run_trial(by_id[config["trial"]], settings, tensors, trial_fn, on_epoch=report)
        if not reported:  # a trial function that ignores on_epoch still reports once, at its end
            tune.report(row)

    return trainable


def _scheduler(tune, scheduler, epochs):
    """Tune's trial scheduler: 'fifo' runs every trial to the end; 'asha' stops the weak ones at its rungs."""
    if scheduler == "fifo":
        return tune.schedulers.FIFOScheduler()
    # val_acc is the best so far, so it never falls: a trial stopped at a rung trails one that went on, and the
    # first of the log's ranking is always a trial that ran every epoch
    return tune.schedulers.ASHAScheduler(time_attr="epochs", metric="val_acc", mode="max", max_t=epochs,
                                         grace_period=1, reduction_factor=ASHA_REDUCTION_FACTOR)


def _recorder(tune, record, epochs):
    """A Tune callback that records each trial's last reported row when it ends, finished or stopped early."""
    latest = {}

    class RecordRows(tune.Callback):
        """Keep each trial's last row; write it to the log from the driver once the trial ends."""

        def on_trial_result(self, iteration, trials, trial, result, **info):
            latest[trial.trial_id] = {k: result[k] for k in search.LOG_COLUMNS}

        def on_trial_complete(self, iteration, trials, trial, **info):
            row = latest.pop(trial.trial_id, None)
            if row is not None:  # a failed trial gets on_trial_error instead and stays out of the log (rerun later)
                record({**row, "stopped_early": row["epochs"] < epochs})

    return RecordRows()
