"""lib.predict: the submission check, the predictor's order and names, its command line and file lock."""

import pytest
import torch
from PIL import Image
from torch import nn

from conftest import hold_lock, write_mode_zoo
from lib import files, folders, models, predict, train


def test_submission_is_verified_before_writing(tmp_path):
    path = tmp_path / "submission.csv"
    predict.write_cifar_submission(path, [0, 1, 2], [3, 4, 5])
    assert path.read_text().splitlines() == ["ID,Labels", "0,3", "1,4", "2,5"]
    with pytest.raises(ValueError, match="outside the known classes"):
        predict.write_cifar_submission(tmp_path / "bad.csv", [0, 1], [3, 10])
    with pytest.raises(ValueError, match="missing"):
        predict.verify_predictions(["a.jpg"], ["x"], ["a.jpg", "b.jpg"], ["x"])
    assert not (tmp_path / "bad.csv").exists()


def test_predict_command_line_offers_the_skip_its_error_advises(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "test"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8), (10, 20, 30)).save(folder / f"{i}.png")
    (folder / "1b.jpg").write_bytes(b"broken" * 10)
    model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 2))
    monkeypatch.setattr(predict, "load_classifier", lambda path, device: (model, ["a", "b"], 8))
    args = ["--checkpoint", "model.pt", "--test-dir", str(folder), "--out", str(tmp_path / "p.csv"), "--device", "cpu"]
    with pytest.raises(ValueError, match=r"1b\.jpg.*--skip-bad-images"):
        predict.main(args)
    assert not (tmp_path / "p.csv").exists()
    with pytest.warns(UserWarning, match="skipped 1 of 4"):
        predict.main(args + ["--skip-bad-images"])
    assert [r.split(",")[0] for r in (tmp_path / "p.csv").read_text().splitlines()] == \
        ["image_name", "0.png", "1.png", "2.png"]
    assert "3 predictions" in capsys.readouterr().out


class RedLevelClassifier(nn.Module):
    """Predicts the class whose level is nearest the image's mean red value (normalised back to 0..255)."""

    def __init__(self, levels):
        super().__init__()
        self.register_buffer("levels", torch.tensor(levels, dtype=torch.float32))

    def forward(self, x):
        red = (x[:, 0].mean((1, 2)) * folders.IMAGENET_STD[0] + folders.IMAGENET_MEAN[0]) * 255
        return -(red[:, None] - self.levels[None]).abs()


def test_predictions_keep_sorted_file_order_and_class_names(tmp_path):
    expected = write_mode_zoo(tmp_path / "zoo")
    classes = ["level_040", "level_080", "level_120", "level_160", "level_200"]
    model = RedLevelClassifier([40, 80, 120, 160, 200])
    out = predict.predict_folder(model, tmp_path / "zoo", classes, 16, tmp_path / "prediction.csv", batch_size=2)
    rows = [line.split(",") for line in open(out).read().splitlines()]
    assert rows[0] == ["image_name", "pred_label"]
    assert [r[0] for r in rows[1:]] == sorted(expected) == ["10_rgba.png", "2_palette.png", "a_gray.png",
                                                            "b_rgb.jpg", "c_cmyk.jpg"]
    assert {name: label for name, label in rows[1:]} == {n: f"level_{v:03d}" for n, v in expected.items()}


def test_predictor_refuses_incomplete_or_unordered_rows(tmp_path):
    path = tmp_path / "prediction.csv"
    with pytest.raises(ValueError, match="not in the input order"):
        predict.write_csv_verified(path, ("image_name", "pred_label"), ["b.jpg", "a.jpg"], ["x", "x"],
                                   ["a.jpg", "b.jpg"], ["x"])
    with pytest.raises(ValueError, match="duplicated"):
        predict.write_csv_verified(path, ("image_name", "pred_label"), ["a.jpg", "a.jpg"], ["x", "x"],
                                   ["a.jpg", "b.jpg"], ["x"])
    with pytest.raises(ValueError, match="outside the known classes"):
        predict.write_csv_verified(path, ("image_name", "pred_label"), ["a.jpg"], ["7"], ["a.jpg"], ["x"])
    assert not path.exists()
    (tmp_path / "zoo").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "zoo" / "a.png")
    with pytest.raises(ValueError, match="3 outputs but 2 class names"):
        predict.predict_folder(RedLevelClassifier([0, 1, 2]), tmp_path / "zoo", ["x", "y"], 8, path)
    assert not path.exists()


def test_cli_rebuilds_the_model_from_its_file(tmp_path, capsys):
    expected = write_mode_zoo(tmp_path / "zoo")
    classes = [f"n{i:08d}" for i in range(7)]
    arch = models.resnet50_cbam_arch(len(classes), placement="stage")
    torch.manual_seed(0)
    model = models.resnet50_cbam(**{k: v for k, v in arch.items() if k != "name"}).eval()
    predict.save_classifier(tmp_path / "model.pt", model, arch, classes, 32)
    out = predict.main(["--checkpoint", str(tmp_path / "model.pt"), "--test-dir", str(tmp_path / "zoo"),
                        "--out", str(tmp_path / "prediction.csv"), "--device", "cpu", "--batch-size", "2"])
    rows = [line.split(",") for line in open(out).read().splitlines()[1:]]
    assert [r[0] for r in rows] == sorted(expected) and all(r[1] in classes for r in rows)
    assert "5 predictions" in capsys.readouterr().out
    # the same model through the function the notebook calls
    direct = predict.predict_folder(model, tmp_path / "zoo", classes, 32, tmp_path / "direct.csv")
    assert open(direct).read() == open(out).read()
    # a training checkpoint carries the same facts in its cfg
    train.save_checkpoint(tmp_path / "best.pt", epoch=0, model=model,
                          optimizer=torch.optim.SGD(model.parameters(), 0.1),
                          scheduler=None, best_metric=0.0, history={},
                          cfg={"arch": arch, "classes": classes, "image_size": 32})
    again = predict.predict_test_folder(tmp_path / "best.pt", tmp_path / "zoo", tmp_path / "again.csv")
    assert open(again).read() == open(out).read()
    torch.save({"model": model.state_dict()}, tmp_path / "bare.pt")
    with pytest.raises(ValueError, match="how to rebuild"):
        predict.load_classifier(tmp_path / "bare.pt")


def test_a_second_prediction_into_the_same_file_stops_naming_the_first(tmp_path):
    out = tmp_path / "prediction.csv"
    holder = hold_lock(files.lock_path_for(out), tmp_path)
    try:
        with pytest.raises(RuntimeError, match=rf"prediction file .*prediction.csv is in use.*pid {holder.pid}"):
            predict.predict_test_folder(tmp_path / "model.pt", tmp_path / "test", out)
    finally:
        holder.kill()
        holder.wait()
