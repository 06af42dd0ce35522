"""lib.plots: the figures."""
import matplotlib

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
