"""lib.summary: each run's headline printed from the results schema."""
from fixture_runs import write_runs


def test_summary_prints_each_runs_headline_and_names_a_file_off_the_schema(tmp_path):
    from lib import summary
    runs_dir = write_runs(tmp_path, broken={"04_cifar10_random_search"})
    lines = summary.summarize(str(runs_dir))
    assert lines[0] == f"results under {runs_dir}:" and len(lines) == 5
    line03 = next(line for line in lines if "03_cifar10_resnet" in line)
    assert "best_val_acc 55.00%, test_acc 53.00%" in line03 and "[demo data, 3 epochs, cpu]" in line03
    line04 = next(line for line in lines if "04_cifar10_random_search" in line)
    assert "unreadable" in line04 and str(runs_dir / "04_cifar10_random_search" / "metrics.json") in line04
    assert summary.summarize(str(tmp_path / "none"))[1] == "  (no metrics.json yet: run `make run`)"
