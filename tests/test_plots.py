"""lib.plots: the figures."""
import matplotlib
import matplotlib.pyplot as plt

from lib import plots, writeups

matplotlib.use("Agg")


def test_accuracy_vs_parameters_plots_one_labelled_point_per_model(tmp_path):
    path = tmp_path / "scatter.png"
    sizes = [writeups.figure("01", "two_layer_parameters"), writeups.figure("01", "resnet34_parameters")]
    fig = plots.plot_accuracy_vs_parameters(["two_layer", "resnet34"], sizes, [0.41, 0.52], str(path), title="t",
                                            reference=(0.02, "chance"))
    ax = fig.axes[0]
    offsets = [tuple(c.get_offsets()[0]) for c in ax.collections]
    assert offsets == [(sizes[0], 0.41), (sizes[1], 0.52)]
    assert [t.get_text() for t in ax.texts] == ["two_layer", "resnet34"]
    assert ax.get_xscale() == "log" and ax.get_ylim()[1] > 0.52
    assert path.stat().st_size > 0


def test_labels_of_crowded_points_do_not_overlap():
    fig, ax = plt.subplots(figsize=(6, 4))
    points = [(2.3e7, 0.12, "resnet34"), (2.4e7, 0.13, "resnet50_ce"), (2.4e7, 0.145, "cbam_focal"),
              (3.3e6, 0.575, "01 two-layer (write-up)"), (3.7e6, 0.53, "best_design"), (3.0e6, 0.18, "smaller_kernel")]
    ax.scatter([p[0] for p in points], [p[1] for p in points])
    ax.set(xscale="log", xlim=(1e5, 1e8), ylim=(0, 1))
    boxes = plots.place_labels(ax, points)
    assert [t.get_text() for t in ax.texts] == [p[2] for p in points]
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    plt.close(fig)
