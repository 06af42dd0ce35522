"""A fixture of every study's results, written through lib.results, for the report, the summary and notebook 05."""
import os

from lib import results


def history(accs, seconds=2.0):
    """A per-epoch history as lib.train.loop writes it, with the given validation accuracies."""
    n = len(accs)
    return {"epoch": list(range(1, n + 1)), "train_loss": [1.0] * n, "train_acc": [a + 0.05 for a in accs],
            "val_loss": [1.2] * n, "val_acc": list(accs), "lr": [0.1] * n, "seconds": [seconds] * n,
            "images_per_s": [100.0] * n}


def run_results(study, models, headline, data="demo", device="cpu", **extra):
    """A StudyResults in lib.results' schema, as notebook `study` fills it."""
    return results.StudyResults(
        study=study, data=data, cfg={"out_dir": f"x/{study}", "max_params": 5_000_000}, device=device, amp="fp32",
        channels_last=False, compile=False, epochs_run=3, headline=headline, models=models, extra=extra,
        environment={"cpu_threads": 2, "gpu": "NVIDIA H100 80GB HBM3" if device == "cuda" else None})


def model(params, acc, accs=(0.1, 0.2, 0.3), **extra):
    """A ModelResult with a history whose best validation accuracy is acc."""
    return results.from_history(history([*accs[:-1], acc]), params, **extra)


def fixture_results(data="demo"):
    """One plausible run per study, keyed by notebook stem, with the fields notebooks 01-04 write."""
    two_layer = {"two_layer": model(3_318_898, 0.30), "single_layer": model(1_000_000, 0.20),
                 "smaller_kernel": model(3_000_000, 0.25), "resnet34": model(21_310_322, 0.40)}
    grid = {name: model(params, acc, (0.4, acc), use_cbam=cbam, loss=loss, saved_mib=mib)
            for name, params, acc, cbam, loss, mib in (("resnet50_ce", 23_712_932, 0.61, False, "ce", 90.6),
                                                       ("resnet50_focal", 23_712_932, 0.62, False, "focal", 90.6),
                                                       ("cbam_ce", 23_800_044, 0.63, True, "ce", 90.9),
                                                       ("cbam_focal", 23_800_044, 0.64, True, "focal", 90.9))}
    grid["cbam_focal"].final_train_acc = 0.8
    best = model(1_000_002, 0.5, (0.3, 0.5), test_acc=0.45, trial=2, trial_val_acc=0.42, design={"blocks": [3, 3, 3]})
    search = {"trials": 3, "draws": 9, "rejections": 4, "trial_epochs": 2, "trial_seconds": 10.0,
              "skipped": {"too_many_params": 4, "pool_too_large": 0, "no_feature_map": 0, "duplicate": 2}}
    cifar = model(1_177_130, 0.55, (0.3, 0.5, 0.55), test_acc=0.53)
    cifar.final_train_acc = 0.6
    return {
        "01_two_layer_imagenet_mini": run_results(
            "01", two_layer, {"two_layer_val_acc": 0.3, "resnet34_val_acc": 0.4, "two_layer_pct_of_resnet34": 0.75},
            data, relative_size=0.1557, image_size=64, goal_met=False, verdict="not met", not_trained=[]),
        "02_resnet50_cbam_100class": run_results(
            "02", grid, {"final_val_acc": 0.64, "model_mib": 90.99}, data, device="cuda", final_experiment="cbam_focal",
            pretrained=False, model_file={"mib": 90.99, "mb": 95.4}),
        "03_cifar10_resnet": run_results("03", {"cifar_resnet": cifar}, {"test_acc": 0.53, "best_val_acc": 0.55}, data),
        "04_cifar10_random_search": run_results(
            "04", {"best_design": best}, {"best_trial_val_acc": 0.42, "retrain_test_acc": 0.45, "designs_searched": 3},
            data, search=search),
    }


TRIALS_CSV = "trial,params,val_acc,seconds\n0,1000000,0.30,3\n1,1000001,0.35,3\n2,1000002,0.42,4\n"


def write_runs(runs_dir, skip=(), broken=(), data="demo"):
    """Write the fixture's metrics.json files under runs_dir; `skip` stems get none, `broken` ones invalid JSON."""
    for stem, run in fixture_results(data).items():
        if stem in skip:
            continue
        os.makedirs(runs_dir / stem, exist_ok=True)
        results.write(runs_dir / stem, run)
        if stem in broken:
            (runs_dir / stem / "metrics.json").write_text("{not json")
        if stem.startswith("04"):
            (runs_dir / stem / "trials.csv").write_text(TRIALS_CSV)
    return runs_dir
