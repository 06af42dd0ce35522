"""Hostile but realistic inputs (issue 24's probes and their kin): each ends in a clear error before anything is
written, with every file that existed before byte-identical, or in the correct result."""
import csv
import hashlib
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_folder
from lib import cifar, compare, config, files, predict, profiles, publish, runbook, train, utils

# ---------------------------------------------------------------- helpers


def snapshot(root):
    """{relative path: sha256, or the target of a link} of every file and link under root."""
    found = {}
    for parent, dirs, names in os.walk(root):
        for name in dirs + names:
            path = os.path.join(parent, name)
            rel = os.path.relpath(path, root)
            if os.path.islink(path):
                found[rel] = "link -> " + os.readlink(path)
            elif os.path.isfile(path):
                with open(path, "rb") as fh:
                    found[rel] = hashlib.sha256(fh.read()).hexdigest()
    return found


def assert_unchanged(before, root):
    """Every path of the earlier snapshot is still there, byte-identical."""
    after = snapshot(root)
    changed = sorted(k for k in before if after.get(k) != before[k])
    assert not changed, f"changed or removed by the call: {changed}"


def images(folder, names):
    """Small PNGs (whatever the extension says, PIL writes PNG) named `names` in folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.new("RGB", (8, 8), (10, 20, 30)).save(folder / name, format="PNG")
    return folder


def stub_classifier(monkeypatch):
    """A tiny two-class model in place of the ResNet50 a model file rebuilds."""
    model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 2))
    monkeypatch.setattr(predict, "load_classifier", lambda path, device: (model, ["a", "b"], 8))
    return model


def cifar_folder(root, labels=None, names=None, meta=None):
    """A CIFAR-10 python-format folder: 5 train batches and a test batch of 20 images each, and batches.meta."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [*cifar.CIFAR_TRAIN_FILES, "test_batch"]:
        batch = {"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8),
                 "labels": labels if labels is not None else [i % 10 for i in range(20)]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=4))
    names = names if names is not None else [f"class{i}" for i in range(10)]
    (folder / "batches.meta").write_bytes(pickle.dumps(meta if meta is not None else {"label_names": names}))
    return root


def tiny_fit(checkpoint_dir, epochs, scheduler, resume=False, cfg=None):
    """fit a tiny CIFAR ResNet on random images with the scheduler `scheduler(optimizer)` builds; the history."""
    from lib import models
    torch.manual_seed(0)
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    y = torch.randint(0, 10, (64,))
    model = models.CifarResNet((8, 16), (1, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loaders = cifar.TensorBatchLoader(x, y, 32, train=True), cifar.TensorBatchLoader(x, y, 32, train=False)
    return train.loop(model, *loaders, epochs=epochs, optimizer=optimizer, scheduler=scheduler(optimizer),
                     checkpoint_dir=checkpoint_dir, cfg=cfg or {"epochs": epochs}, resume=resume, progress=False)


def cosine(epochs):
    """A cosine schedule over `epochs` (its shape depends on the run's length)."""
    return lambda optimizer: torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)


def multistep(optimizer):
    """Milestones in epochs: the same schedule whatever the run's length."""
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, [1, 3], 0.1)


# ---------------------------------------------------------------- the cases: (set-up, call, message)
# each set-up gets tmp_path and monkeypatch and returns the call that must fail; the test checks its message and
# that every file present before the call is byte-identical after it

def probe_01_predict_out_is_the_model(tmp, mp):
    (tmp / "model.pt").write_bytes(b"model weights" * 300)
    images(tmp / "test", ["a.png"])
    return lambda: predict.main(["--checkpoint", str(tmp / "model.pt"), "--test-dir", str(tmp / "test"),
                                 "--out", str(tmp / "model.pt"), "--device", "cpu"])


def probe_01b_predict_out_is_another_file(tmp, mp):
    stub_classifier(mp)
    (tmp / "other.pt").write_bytes(b"another model" * 300)
    images(tmp / "test", ["a.png"])
    return lambda: predict.main(["--checkpoint", "m.pt", "--test-dir", str(tmp / "test"),
                                 "--out", str(tmp / "other.pt"), "--device", "cpu"])


def probe_01c_predict_out_inside_the_test_folder(tmp, mp):
    stub_classifier(mp)
    images(tmp / "test", ["a.png"])
    return lambda: predict.main(["--checkpoint", "m.pt", "--test-dir", str(tmp / "test"),
                                 "--out", str(tmp / "test" / "pred.csv"), "--device", "cpu"])


def probe_01d_predict_out_is_a_folder(tmp, mp):
    stub_classifier(mp)
    images(tmp / "test", ["a.png"])
    (tmp / "out").mkdir()
    (tmp / "out" / "keep.txt").write_text("precious")
    return lambda: predict.main(["--checkpoint", "m.pt", "--test-dir", str(tmp / "test"), "--out", str(tmp / "out"),
                                 "--device", "cpu"])


def probe_02_lock_is_a_symlink(tmp, mp):
    stub_classifier(mp)
    images(tmp / "test", ["a.png"])
    (tmp / "keep.txt").write_text("precious")
    (tmp / "runs").mkdir()
    (tmp / "runs" / ".pred.csv.lock").symlink_to(tmp / "keep.txt")
    return lambda: predict.main(["--checkpoint", "m.pt", "--test-dir", str(tmp / "test"),
                                 "--out", str(tmp / "runs" / "pred.csv"), "--device", "cpu"])


def probe_02b_run_lock_is_a_symlink(tmp, mp):
    (tmp / "keep.txt").write_text("precious")
    (tmp / "run").mkdir()
    (tmp / "run" / ".lock").symlink_to(tmp / "keep.txt")
    return lambda: utils.start_run({"data_dir": str(tmp / "data")}, str(tmp / "run"))


def probe_02c_lock_is_a_hard_link(tmp, mp):
    (tmp / "keep.txt").write_text("precious")
    (tmp / "run").mkdir()
    os.link(tmp / "keep.txt", tmp / "run" / ".lock")
    return lambda: utils.start_run({"data_dir": str(tmp / "data")}, str(tmp / "run"))


def probe_03_publish_into_its_own_runs(tmp, mp):
    run_folder(tmp / "runs" / "p")
    return lambda: publish.main([str(tmp / "runs" / "p"), str(tmp / "runs" / "p")])


def probe_04_publish_over_the_folder_holding_the_runs(tmp, mp):
    run_folder(tmp / "proj" / "runs")
    (tmp / "proj" / "notes.md").write_text("mine")
    return lambda: publish.main([str(tmp / "proj" / "runs"), str(tmp / "proj")])


def probe_04b_publish_over_a_folder_publish_did_not_fill(tmp, mp):
    run_folder(tmp / "runs" / "cpu")
    (tmp / "results" / "cpu").mkdir(parents=True)
    (tmp / "results" / "cpu" / "metrics.json").write_text("{}")
    return lambda: publish.main([str(tmp / "runs" / "cpu"), str(tmp / "results")])


def probe_04c_publish_inside_its_runs(tmp, mp):
    run_folder(tmp / "runs")
    return lambda: publish.main([str(tmp / "runs"), str(tmp / "runs" / "published")])


def probe_04d_publish_over_a_hand_written_file_of_the_same_name(tmp, mp):
    run_folder(tmp / "runs")
    publish.publish(str(tmp / "runs"), str(tmp / "results"))
    (tmp / "runs" / "tolerances.yaml").write_text("03_cifar10_resnet: {}\n")  # a run file with the kept file's name
    (tmp / "results" / "tolerances.yaml").write_text("03_cifar10_resnet:\n  test_acc: 0.02\n")
    return lambda: publish.main([str(tmp / "runs"), str(tmp / "results")])


def probe_07_profile_with_an_unknown_key(tmp, mp):
    return lambda: profiles.check_profile_values({"epoch": 1}, {"epochs": int, "lr": float}, "configs/03/mine.yaml")


def probe_07b_profile_with_a_mistyped_value(tmp, mp):
    return lambda: profiles.check_profile_values({"epochs": "many"}, {"epochs": int}, "configs/03/mine.yaml")


def probe_08_test_labels_name_none_of_the_images(tmp, mp):
    (tmp / "labels.csv").write_text("image_name,label\nother.jpg,a\n")
    return lambda: predict.read_test_labels(str(tmp / "labels.csv"), ["a.png", "b.png"], ["a", "b"])


def probe_08b_test_labels_outside_the_classes(tmp, mp):
    (tmp / "labels.csv").write_text("image_name,label\na.png,a\nb.png,zebra\n")
    return lambda: predict.read_test_labels(str(tmp / "labels.csv"), ["a.png", "b.png"], ["a", "b"])


def probe_09_resume_with_other_epochs_on_a_cosine_schedule(tmp, mp):
    tiny_fit(tmp / "ck", 2, cosine(2))
    return lambda: tiny_fit(tmp / "ck", 4, cosine(4), resume=True, cfg={"epochs": 4})


def probe_09b_resume_with_fewer_epochs_than_trained(tmp, mp):
    tiny_fit(tmp / "ck", 3, multistep)
    return lambda: tiny_fit(tmp / "ck", 2, multistep, resume=True, cfg={"epochs": 2})


def probe_10_cifar_float_labels(tmp, mp):
    cifar_folder(tmp, labels=[1.7] * 20)
    return lambda: cifar.load_cifar10(str(tmp))


def probe_10b_cifar_meta_with_11_names(tmp, mp):
    cifar_folder(tmp, names=[f"class{i}" for i in range(11)])
    return lambda: cifar.load_cifar10(str(tmp))


def probe_11_meta_without_label_names(tmp, mp):
    cifar_folder(tmp, meta={"num_cases_per_batch": 20})
    return lambda: cifar.load_cifar10(str(tmp))


def probe_11b_meta_with_repeated_names(tmp, mp):
    cifar_folder(tmp, names=["cat"] * 10)
    return lambda: cifar.load_cifar10(str(tmp))


def probe_11c_tolerance_not_a_number(tmp, mp):
    (tmp / "tolerances.yaml").write_text("03_cifar10_resnet:\n  test_acc: two percent\n")
    return lambda: compare.read_tolerances(str(tmp / "tolerances.yaml"))


def probe_11d_negative_tolerance(tmp, mp):
    (tmp / "tolerances.yaml").write_text("03_cifar10_resnet:\n  test_acc: -0.02\n")
    return lambda: compare.read_tolerances(str(tmp / "tolerances.yaml"))


def probe_11e_tolerance_for_an_unknown_metric(tmp, mp):
    return lambda: compare.check_tolerance_names({"03_cifar10_resnet": {"test_accuracy": 0.02}},
                                                 {"03_cifar10_resnet": {"test_acc": 0.8}}, "tolerances.yaml")


def probe_11f_model_file_with_a_nonsensical_field(tmp, mp):
    from lib import models
    arch = models.resnet50_cbam_arch(2)
    arch["reduction"] = -3
    torch.save({"model": {}, "arch": arch, "classes": ["a", "b"], "image_size": 32}, tmp / "model.pt")
    return lambda: predict.load_classifier(str(tmp / "model.pt"))


def probe_11g_model_file_with_classes_that_are_not_names(tmp, mp):
    from lib import models
    torch.save({"model": {}, "arch": models.resnet50_cbam_arch(2), "classes": [1, 2], "image_size": 32},
               tmp / "model.pt")
    return lambda: predict.load_classifier(str(tmp / "model.pt"))


def probe_11h_nan_weight_in_last_pt(tmp, mp):
    tiny_fit(tmp / "ck", 1, multistep)
    ckpt = torch.load(tmp / "ck" / "last.pt", weights_only=True)
    next(v for v in ckpt["model"].values() if v.is_floating_point()).fill_(float("nan"))
    torch.save(ckpt, tmp / "ck" / "last.pt")
    return lambda: tiny_fit(tmp / "ck", 2, multistep, resume=True, cfg={"epochs": 1})


def probe_11i_last_pt_with_a_wrong_field(tmp, mp):
    tiny_fit(tmp / "ck", 1, multistep)
    ckpt = torch.load(tmp / "ck" / "last.pt", weights_only=True)
    ckpt["epoch"] = "one"
    torch.save(ckpt, tmp / "ck" / "last.pt")
    return lambda: tiny_fit(tmp / "ck", 2, multistep, resume=True, cfg={"epochs": 1})


def probe_11j_empty_test_pickle(tmp, mp):
    empty = {b"data": np.zeros((0, 32, 32, 3), np.uint8), b"ids": np.zeros(0, int)}
    (tmp / "test.pkl").write_bytes(pickle.dumps(empty))
    return lambda: cifar.load_unlabeled_cifar(str(tmp / "test.pkl"))


def probe_12_list_element_of_the_wrong_type(tmp, mp):
    return lambda: config.build_cfg({"channels": "[32.5, 64, 128]"}, {"channels": list[int]})


def probe_12b_empty_out_dir(tmp, mp):
    return lambda: utils.start_run({"data_dir": "data/cifar10"}, "")


def probe_12c_out_dir_is_the_data(tmp, mp):
    (tmp / "data").mkdir()
    (tmp / "data" / "batch").write_bytes(b"data")
    return lambda: utils.start_run({"data_dir": str(tmp / "data")}, str(tmp / "data"))


def probe_12d_out_dir_holds_the_data(tmp, mp):
    (tmp / "data").mkdir()
    return lambda: utils.start_run({"data_dir": str(tmp / "data")}, str(tmp))


def probe_13_publish_into_a_link(tmp, mp):
    run_folder(tmp / "runs")
    publish.publish(str(tmp / "runs"), str(tmp / "real"))
    (tmp / "real" / "keep.txt").write_text("precious")
    (tmp / "results").symlink_to(tmp / "real")
    return lambda: publish.main([str(tmp / "runs"), str(tmp / "results")])


def probe_15_file_name_with_a_newline(tmp, mp):
    stub_classifier(mp)
    images(tmp / "test", ["a.png", "b\n.png"])
    return lambda: predict.main(["--checkpoint", "m.pt", "--test-dir", str(tmp / "test"),
                                 "--out", str(tmp / "pred.csv"), "--device", "cpu"])


def probe_15b_file_name_that_is_a_formula(tmp, mp):
    stub_classifier(mp)
    images(tmp / "test", ["a.png", "=HYPERLINK(1).png"])
    return lambda: predict.main(["--checkpoint", "m.pt", "--test-dir", str(tmp / "test"),
                                 "--out", str(tmp / "pred.csv"), "--device", "cpu"])


# ---- a round of my own, on classes the issue does not list

def own_demo_out_over_real_data(tmp, mp):
    from lib import demo
    (tmp / "cifar10" / "cifar-10-batches-py").mkdir(parents=True)
    (tmp / "cifar10" / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"the real download")
    return lambda: demo.main(["--out", str(tmp), "--only", "cifar10", "--force"])


def own_compare_with_a_missing_tolerance_file(tmp, mp):
    reference = utils.repo_path("results/cpu")  # read only
    return lambda: compare.main([reference, reference, "--tolerances", str(tmp / "tolerance.yaml")])


CASES = {  # set-up -> what the error must say
    probe_01_predict_out_is_the_model: "is checkpoint.*destroy its own input",
    probe_01b_predict_out_is_another_file: "other.pt exists and is not a prediction file.*nothing was written",
    probe_01c_predict_out_inside_the_test_folder: "lies inside test folder",
    probe_01d_predict_out_is_a_folder: "is a folder, not a prediction file",
    probe_02_lock_is_a_symlink: r"\.pred\.csv\.lock is a symbolic link",
    probe_02b_run_lock_is_a_symlink: r"\.lock is a symbolic link",
    probe_02c_lock_is_a_hard_link: "is a hard link",
    probe_03_publish_into_its_own_runs: "results folder .* is runs_dir",
    probe_04_publish_over_the_folder_holding_the_runs: "results folder .* contains runs_dir",
    probe_04b_publish_over_a_folder_publish_did_not_fill: r"holds files that publish did not write.*cpu",
    probe_04c_publish_inside_its_runs: "lies inside runs_dir",
    probe_04d_publish_over_a_hand_written_file_of_the_same_name: "tolerances.yaml was not written by publish",
    probe_07_profile_with_an_unknown_key: r"mine\.yaml: unknown key 'epoch'.*takes: epochs, lr",
    probe_07b_profile_with_a_mistyped_value: r"mine\.yaml: key 'epochs' is 'many', it should be of type int",
    probe_08_test_labels_name_none_of_the_images: r"labels\.csv.*2 of the 2 test images have no label",
    probe_08b_test_labels_outside_the_classes: r"labels\.csv.*not classes.*zebra",
    probe_09_resume_with_other_epochs_on_a_cosine_schedule: r"last\.pt: the learning-rate schedule differs.*T_max: 2",
    probe_09b_resume_with_fewer_epochs_than_trained: r"last\.pt already holds 3 epochs, more than epochs=2",
    probe_10_cifar_float_labels: r"data_batch_1: field 'labels' should be whole class numbers.*1\.7",
    probe_10b_cifar_meta_with_11_names: r"batches\.meta: field 'label_names' holds 11 names.*only 10 classes",
    probe_11_meta_without_label_names: r"batches\.meta: no field 'label_names'",
    probe_11b_meta_with_repeated_names: r"batches\.meta: field 'label_names' should hold distinct",
    probe_11c_tolerance_not_a_number: r"tolerances\.yaml: field '03_cifar10_resnet\.test_acc' is 'two percent'",
    probe_11d_negative_tolerance: r"test_acc' is -0\.02, it should be a number >= 0",
    probe_11e_tolerance_for_an_unknown_metric: r"unknown metric '03_cifar10_resnet\.test_accuracy'",
    probe_11f_model_file_with_a_nonsensical_field: r"model\.pt: field 'arch\.reduction' is -3",
    probe_11g_model_file_with_classes_that_are_not_names: r"model\.pt: field 'classes' is \[1, 2\]",
    probe_11h_nan_weight_in_last_pt: r"last\.pt: field 'model' holds non-finite weights",
    probe_11i_last_pt_with_a_wrong_field: r"last\.pt: field 'epoch' is 'one'",
    probe_11j_empty_test_pickle: r"test\.pkl: b'data' holds no images",
    probe_12_list_element_of_the_wrong_type: r"'channels' = \[32\.5, 64, 128\] should be of type list\[int\]",
    probe_12b_empty_out_dir: "out_dir='': give the folder",
    probe_12c_out_dir_is_the_data: "out_dir .* is data_dir",
    probe_12d_out_dir_holds_the_data: "out_dir .* contains data_dir",
    probe_13_publish_into_a_link: "is a symbolic link, not a folder",
    probe_15_file_name_with_a_newline: r"cannot hold faithfully \(first: 'b\\n\.png'\)",
    probe_15b_file_name_that_is_a_formula: r"cannot hold faithfully \(first: '=HYPERLINK",
    own_demo_out_over_real_data: r"cifar10 holds files lib\.demo did not write",
    own_compare_with_a_missing_tolerance_file: r"--tolerances .*tolerance\.yaml: no such file",
}


@pytest.mark.parametrize("setup", list(CASES), ids=lambda f: f.__name__.split("_", 1)[1])
def test_hostile_input_stops_with_a_clear_error_and_changes_nothing(setup, tmp_path, monkeypatch):
    call = setup(tmp_path, monkeypatch)
    before = snapshot(tmp_path)
    with pytest.raises((ValueError, FileExistsError, RuntimeError, SystemExit), match=CASES[setup]):
        call()
    assert_unchanged(before, tmp_path)
    leftovers = [p for p in snapshot(tmp_path) if p not in before and ".replace-" in p]
    assert not leftovers, f"a staging folder was left behind: {leftovers}"


# ---------------------------------------------------------------- the cases that must succeed, correctly

def test_overwrite_removes_a_linked_checkpoints_folder_as_a_link_only(tmp_path):
    """overwrite=True deletes the earlier run's markers; one that is a link goes, never what it leads to."""
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "best.pt").write_bytes(b"weights")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoints").symlink_to(tmp_path / "elsewhere")
    before = snapshot(tmp_path / "elsewhere")
    utils.start_run({"data_dir": str(tmp_path / "data")}, str(tmp_path / "run"), overwrite=True)
    files.unlock_file(tmp_path / "run" / ".lock")
    assert_unchanged(before, tmp_path / "elsewhere")
    assert not os.path.lexists(tmp_path / "run" / "checkpoints")


def test_publish_killed_between_its_renames_is_recovered_with_the_hand_written_files(tmp_path):
    """Probe 5: the old results moved aside, the new ones not yet in place; the next publish restores, then keeps
    tolerances.yaml."""
    runs, results = run_folder(tmp_path / "runs"), tmp_path / "results" / "cpu"
    publish.publish(str(runs), str(results))
    (results / "tolerances.yaml").write_text("03_cifar10_resnet:\n  test_acc: 0.02\n")
    backup, _ = files._swap_paths(results)
    os.replace(results, backup)  # where a kill between the two renames leaves it
    (tmp_path / "results" / "cpu.old").mkdir()  # the user's own folder of that name: left alone
    (tmp_path / "results" / "cpu.old" / "mine.txt").write_text("mine")
    publish.main([str(runs), str(results)])
    assert (results / "tolerances.yaml").read_text() == "03_cifar10_resnet:\n  test_acc: 0.02\n"
    assert (results / "03_cifar10_resnet" / "metrics.json").is_file() and not os.path.lexists(backup)
    assert (tmp_path / "results" / "cpu.old" / "mine.txt").read_text() == "mine"
    assert sorted(os.listdir(tmp_path / "results")) == ["cpu", "cpu.old"]


def test_publish_killed_after_its_renames_keeps_the_new_copy(tmp_path):
    runs, results = run_folder(tmp_path / "runs"), tmp_path / "results"
    publish.publish(str(runs), str(results))
    backup, staging = files._swap_paths(results)
    os.makedirs(backup)  # the old copy, not yet deleted
    os.makedirs(staging + "half")  # and a staging folder of a publish killed while copying
    publish.publish(str(runs), str(results))
    assert sorted(os.listdir(tmp_path)) == ["results", "runs"]


def test_unlisted_image_extensions_and_other_files_are_named_in_a_warning(tmp_path, monkeypatch, capsys):
    """Probe 6: a GIF and a JFIF that PIL reads, and a text file, get no prediction and the warning names each."""
    stub_classifier(monkeypatch)
    images(tmp_path / "test", ["a.png", "b.png"])
    Image.new("RGB", (8, 8)).save(tmp_path / "test" / "c.gif")
    Image.new("RGB", (8, 8)).save(tmp_path / "test" / "d.jfif", format="JPEG")
    (tmp_path / "test" / "notes.txt").write_text("hello")
    with pytest.warns(UserWarning, match=r"3 file\(s\) get no prediction \('c\.gif': a GIF image.*'d\.jfif': a "
                                         r"JPEG image.*'notes\.txt': not an image"):
        predict.main(["--checkpoint", "m.pt", "--test-dir", str(tmp_path / "test"), "--out", str(tmp_path / "p.csv"),
                      "--device", "cpu"])
    assert "2 predictions" in capsys.readouterr().out


def test_a_prediction_file_is_replaced_and_the_printed_count_is_the_rows(tmp_path, monkeypatch, capsys):
    stub_classifier(monkeypatch)
    images(tmp_path / "test", ["a,1.png", "b.png", "c d.png"])
    args = ["--checkpoint", "m.pt", "--test-dir", str(tmp_path / "test"), "--out", str(tmp_path / "p.csv"),
            "--device", "cpu"]
    predict.main(args)
    predict.main(args)  # its own earlier output: replaced
    assert capsys.readouterr().out.splitlines()[-1].endswith(": 3 predictions")
    with open(tmp_path / "p.csv", newline="") as fh:
        assert [r[0] for r in csv.reader(fh)] == ["image_name", "a,1.png", "b.png", "c d.png"]


def test_a_longer_run_on_a_milestone_schedule_is_the_same_run(tmp_path):
    """Probe 9's allowed side: MultiStepLR's milestones do not depend on epochs, so 2 then 4 equals 4."""
    full = tiny_fit(tmp_path / "full", 4, multistep)
    tiny_fit(tmp_path / "cut", 2, multistep)
    resumed = tiny_fit(tmp_path / "cut", 4, multistep, resume=True, cfg={"epochs": 4})
    assert resumed["lr"] == full["lr"] == pytest.approx([0.1, 0.01, 0.01, 0.001])
    assert resumed["train_loss"] == full["train_loss"]


def test_resume_compares_values_not_how_they_were_given():
    """Probe 14: `-f smoke.yaml` records profile 'full', `-p profile smoke` records 'smoke': the values are equal."""
    saved = {"profile": "full", "epochs": 2, "lr": 0.1, "data_dir": "data/demo/cifar10"}
    train._check_resume_cfg(saved, {**saved, "profile": "smoke", "data_dir": utils.repo_path("data/demo/cifar10")},
                            "last.pt")
    with pytest.raises(ValueError, match="lr: 0.1 in the checkpoint, 0.2 now"):
        train._check_resume_cfg(saved, {**saved, "profile": "smoke", "lr": 0.2}, "last.pt")


def test_runbook_from_another_folder_writes_under_the_runs_it_checks(tmp_path, monkeypatch):
    """Probe 13: --runs is taken from the caller's folder, and the notebook gets the absolute out_dir, so a second
    call sees the finished study and skips it."""
    calls = []
    monkeypatch.setattr(runbook, "run_one", lambda nb, params, output: calls.append((params, output)))
    monkeypatch.chdir(tmp_path)
    notebook = utils.repo_path("notebooks/03_cifar10_resnet.ipynb")
    assert runbook.main(["--runs", "r", notebook]) == 0
    params, output = calls[0]
    assert params["out_dir"] == str(tmp_path / "r" / "03_cifar10_resnet") and output.startswith(str(tmp_path / "r"))
    (tmp_path / "r" / "03_cifar10_resnet").mkdir()
    (tmp_path / "r" / "03_cifar10_resnet" / "metrics.json").write_text("{}")
    assert runbook.main(["--runs", "r", os.path.relpath(notebook)]) == 0 and len(calls) == 1
