"""lib.results: the one metrics.json schema, written and read back, and a clear error naming file and field."""
import json

import pytest
import torch

from lib import results, writeups


def history(accs):
    """A per-epoch history as lib.train.loop writes it."""
    n = len(accs)
    return {"epoch": list(range(1, n + 1)), "train_loss": [1.0] * n, "train_acc": list(accs), "val_loss": [1.1] * n,
            "val_acc": list(accs), "lr": [0.1] * n, "seconds": [2.0, 4.0][:n], "images_per_s": [10.0] * n}


def a_run(headline=None):
    """A small StudyResults with one model."""
    model = results.from_history(history([0.2, 0.4]), 1234, test_acc=0.35, trial=3)
    return results.StudyResults(study="03", data="demo", cfg={"seed": 7}, device="cpu", amp="fp32",
                                channels_last=False, compile=None, epochs_run=2,
                                headline=headline or {"test_acc": 0.35, "best_val_acc": 0.4},
                                models={"cifar_resnet": model}, extra={"submission": None})


def test_write_then_read_gives_the_same_results(tmp_path):
    run = a_run()
    path = results.write(tmp_path, run)
    assert path == str(tmp_path / "metrics.json")
    back = results.read(tmp_path)
    assert back == run and results.read(path) == run
    model = back.models["cifar_resnet"]
    assert (model.best_val_acc, model.seconds_per_epoch, model.final_train_acc) == (0.4, 3.0, 0.4)
    assert model.extra["trial"] == 3 and back.environment["cpu_threads"] >= 1
    results.check(back)


def test_metrics_json_records_seed_versions_and_device(tmp_path):
    """What utils.write_metrics (a second writer off the schema, now gone) was tested for, through the schema."""
    results.write(tmp_path, a_run())
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["cfg"]["seed"] == 7 and saved["device"] == "cpu"
    assert saved["environment"]["torch"] == torch.__version__
    assert {"python", "torchvision", "numpy", "platform", "cuda"} <= set(saved["environment"])


def _broken(tmp_path, change):
    """Write a_run's JSON with change(tree) applied; return the path."""
    tree = json.loads(json.dumps(__import__("dataclasses").asdict(a_run())))
    change(tree)
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(tree))
    return str(path)


@pytest.mark.parametrize("change, message", [
    (lambda t: t.pop("headline"), "missing field 'headline'"),
    (lambda t: t["models"]["cifar_resnet"].pop("parameters"), "missing field 'models.cifar_resnet.parameters'"),
    (lambda t: t.update(seconds_total=3), "unknown field 'seconds_total'"),
    (lambda t: t.update(epochs_run="2"), "field 'epochs_run' must be a whole number"),
    (lambda t: t["models"]["cifar_resnet"].update(best_val_acc=1.5), "'models.cifar_resnet.best_val_acc' must be"),
    (lambda t: t.update(headline={}), "field 'headline' is empty"),
    (lambda t: t.update(headline={"test_acc": "high"}), "'headline.test_acc' must be a finite number"),
    (lambda t: t["models"].update(m=[1]), "field 'models.m' must be an object"),
])
def test_a_missing_or_malformed_field_is_named_with_the_file(tmp_path, change, message):
    path = _broken(tmp_path, change)
    with pytest.raises(results.ResultsError, match="metrics.json") as err:
        results.read(path)
    assert path in str(err.value) and message in str(err.value)


def test_a_missing_or_unreadable_file_is_named(tmp_path):
    with pytest.raises(results.ResultsError, match="no such file"):
        results.read(tmp_path)
    (tmp_path / "metrics.json").write_text("{not json")
    with pytest.raises(results.ResultsError, match=f"{tmp_path}/metrics.json: unreadable"):
        results.read(tmp_path)


def test_check_fails_on_an_insane_run():
    run = a_run()
    run.models["cifar_resnet"].history["val_loss"][0] = float("nan")
    with pytest.raises(AssertionError, match="non-finite loss"):
        results.check(run)
    run = a_run()
    run.models["cifar_resnet"].best_val_acc = 0.3
    with pytest.raises(AssertionError, match="not the history's best"):
        results.check(run)
    with pytest.raises(AssertionError, match="is missing or empty"):
        results.check_files("/nonexistent", ["x.png"])


HEADLINES = {"01": {"two_layer_val_acc", "resnet34_val_acc", "two_layer_pct_of_resnet34"},
             "02": {"final_val_acc", "model_mib"}, "03": {"test_acc", "best_val_acc"},
             "04": {"best_trial_val_acc", "retrain_test_acc", "designs_searched"}, "05": {"studies_with_results"}}


@pytest.mark.parametrize("study", sorted(HEADLINES))
def test_every_study_has_its_headline_documented(study):
    """The module docstring names each study's headline keys (lib.compare relies on them)."""
    line = next(line for line in results.__doc__.splitlines() if line.strip().startswith(f"{study}:"))
    assert all(key in line for key in HEADLINES[study]), (study, line)
    assert study == "05" or study in writeups.STUDIES


def test_epoch_time_is_the_median_with_the_first_epochs_excess_apart():
    """On a GPU the first epoch carries torch.compile (a minute): a mean would report it as the speed."""
    history = {"val_acc": [0.1, 0.2, 0.3, 0.4], "train_acc": [0.1, 0.2, 0.3, 0.4], "seconds": [61.0, 1.0, 1.2, 0.9]}
    model = results.from_history(history, 10)
    assert model.seconds_per_epoch == pytest.approx(1.1)  # median of all four
    assert model.extra["first_epoch_seconds"] == 61.0 and model.extra["warmup_seconds"] == pytest.approx(60.0)
