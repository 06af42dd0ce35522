"""lib.session: a run's set-up, scoring a checkpoint and picking misclassified samples, without a notebook."""
import os

import pytest
import torch

from lib import session, train


def _cfg(tmp_path, **extra):
    cfg = {"device": "cpu", "amp": None, "channels_last": None, "compile_model": None, "seed": 3,
           "data_dir": "data/demo/cifar10", "out_dir": str(tmp_path / "run"), "resume": False, "overwrite": False}
    return {**cfg, **extra}


def test_prepare_resolves_the_switches_and_writes_nothing(tmp_path):
    run = session.prepare(_cfg(tmp_path))
    assert run.device == torch.device("cpu") and run.amp in ("bf16", "fp32") and run.compile is False
    assert run.data_kind == "demo" and not (tmp_path / "run").exists()
    assert torch.initial_seed() == 3  # seeded
    with pytest.raises(RuntimeError, match="before Session.start"):
        run.path("x.png")
    assert "compile: False, data: demo" in run.describe()


def test_start_claims_out_dir_and_titles_say_the_data(tmp_path):
    run = session.prepare(_cfg(tmp_path, data_dir=str(tmp_path / "cifar10"), amp=False))
    assert run.start() == str(tmp_path / "run") and (tmp_path / "run" / "cfg.json").is_file()
    assert run.path("a", "b.png") == os.path.join(str(tmp_path / "run"), "a", "b.png")
    assert run.title("learning curves") == "learning curves (real data)" and run.amp == "fp32"
    with pytest.raises(FileExistsError, match="already holds a run"):
        session.prepare(_cfg(tmp_path)).start()


def test_score_checkpoint_loads_the_saved_weights_and_says_their_epoch(tmp_path):
    torch.manual_seed(0)
    model, other = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    x, y = torch.randn(10, 4), torch.arange(10) % 3
    train.save_checkpoint(tmp_path / "best.pt", epoch=4, model=model,
                          optimizer=torch.optim.SGD(model.parameters(), 0.1),
                          scheduler=None, best_metric=0.0, history={}, cfg={})
    scored = session.score_checkpoint(other, tmp_path / "best.pt", [(x, y)], "cpu")
    assert torch.equal(other.weight, model.weight) and scored["epoch"] == 5 and scored["count"] == 10
    assert torch.equal(scored["predictions"], model(x).argmax(1))
    assert "predictions" not in session.score_checkpoint(other, tmp_path / "best.pt", [(x, y)], "cpu",
                                                         return_predictions=False)
    with pytest.raises(ValueError, match="best.pt holds weights of a different architecture"):
        session.score_checkpoint(torch.nn.Linear(4, 5), tmp_path / "best.pt", [(x, y)], "cpu")


def test_misclassified_sample_picks_wrong_items_in_loader_order():
    images = torch.arange(10.0).view(10, 1)
    scored = {"predictions": torch.tensor([0, 1, 0, 1, 0, 1, 0, 1, 0, 1]), "targets": torch.zeros(10, dtype=torch.long)}
    loader = [(images[i:i + 3], None) for i in range(0, 10, 3)]
    wrong, picked = session.misclassified_sample(scored, loader, 3, seed=0)
    assert len(wrong) == 3 and wrong == sorted(wrong) and all(i % 2 == 1 for i in wrong)
    assert [float(p) for p in picked] == [float(i) for i in wrong]
    assert session.misclassified_sample({**scored, "predictions": scored["targets"]}, loader, 3, 0) == ([], [])
