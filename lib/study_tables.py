"""Study 01's comparison table and verdict, study 02's experiment rows: what those notebooks build from their runs.

Study 01 asks whether the two-layer net reaches 90% of ResNet34's accuracy; study 02 compares ResNet50 with and
without CBAM, under cross-entropy and focal loss (EXPERIMENTS names the four).
"""
from statistics import mean

import pandas as pd

from lib import utils, writeups

GOAL = writeups.figure("01", "goal_pct_of_resnet34")  # study 01's target share of the baseline's accuracy
# study 02's experiments, name -> (CBAM modules?, loss): the two factors of the write-up's comparisons
EXPERIMENTS = {"resnet50_ce": (False, "ce"), "resnet50_focal": (False, "focal"),
               "cbam_ce": (True, "ce"), "cbam_focal": (True, "focal")}


def comparison_table(names, histories, architecture):
    """Study 01's table: best accuracy, size and speed per model, relative to ResNet34 when it was trained."""
    comparison = pd.DataFrame([{
        "model": name, "best val accuracy": max(histories[name]["val_acc"]),
        "parameters": int(architecture.loc[name, "parameters"]),
        "effective layers": int(architecture.loc[name, "effective layers"]),
        "seconds / epoch": mean(histories[name]["seconds"]), "images / s": mean(histories[name]["images_per_s"]),
    } for name in names]).set_index("model")
    if "resnet34" in histories:
        baseline = comparison.loc["resnet34"]
        comparison["relative performance (%)"] = (100 * comparison["best val accuracy"] / baseline["best val accuracy"]
                                                  if baseline["best val accuracy"] > 0 else float("nan"))
        comparison["relative size (%)"] = 100 * comparison["parameters"] / baseline["parameters"]
    else:
        print("relative performance and size are measured against ResNet34, which this run did not train "
              f"(model_names={list(names)})")
    return comparison


def two_layer_verdict(comparison, published, *, data_kind, epochs, image_size, max_steps_per_epoch):
    """Study 01's verdict from this run alone: (text, relative performance, relative size, goal met).

    `published` is the write-up's (two-layer, ResNet34) accuracy on the real data, quoted for reference only, and
    only beside a run on real data; on demo data there is no goal verdict (goal met: None).
    """
    names = list(comparison.index)
    missing = [name for name in ("two_layer", "resnet34") if name not in comparison.index]
    relative_performance = relative_size = goal_met = None
    if missing:
        verdict = (f"No verdict: the comparison needs both two_layer and resnet34, and this run did not train "
                   f"{' or '.join(missing)} (model_names={list(names)}).")
    elif comparison.loc["resnet34", "best val accuracy"] == 0:
        verdict = "No verdict: ResNet34 never classified a validation image correctly, so there is no ratio to take."
    else:
        two, base = comparison.loc["two_layer", "best val accuracy"], comparison.loc["resnet34", "best val accuracy"]
        relative_performance = float(two / base)
        relative_size = float(comparison.loc["two_layer", "relative size (%)"] / 100)
        verdict = (f"On this run's **{data_kind} data** the two-layer net reached **{relative_performance:.1%}** of "
                   f"ResNet34's best validation accuracy ({two:.2%} against {base:.2%}) with {relative_size:.1%} of "
                   "its parameters")
        goal_met = relative_performance >= GOAL
        verdict += f": the {GOAL:.0%} goal is **{'met' if goal_met else 'not met'}**." if data_kind == "real" else "."
    if data_kind != "real":  # a pipeline check: a goal or a figure of the write-up would read as if it applied
        verdict += (f" {data_kind.capitalize()} data tests the pipeline, not the study: no verdict on the "
                    f"{GOAL:.0%} goal, and nothing here compares with the write-up's figures.")
        return verdict, relative_performance, relative_size, None
    if (epochs, image_size) != (20, 224) or max_steps_per_epoch is not None:
        verdict += (f" This run ({data_kind} data, {epochs} epochs at {image_size} px) is not the study's setting, "
                    "so it says nothing about the write-up's claim either way.")
    two_pub, base_pub = published
    verdict += (f" For reference, the write-up reports {two_pub:.2%} against {base_pub:.2%} on the real "
                f"ImageNet-mini, {two_pub / base_pub:.1%} of the baseline.")
    return verdict, relative_performance, relative_size, goal_met


def beside_write_up(data_kind, figure_text):
    """The write-up's figure to print beside a real-data result; on demo data a note instead, never the figure: a
    synthetic run's number set beside the study's reads as a near-reproduction."""
    return figure_text if data_kind == "real" else f"{data_kind} data: a pipeline check, not the study"


def experiment_row(name, model, history, scored):
    """Study 02's line of the results table for one trained experiment; `scored` is its best.pt re-scored."""
    use_cbam, loss_kind = EXPERIMENTS[name]
    row = {"use_cbam": use_cbam, "loss": loss_kind, "parameters": utils.count_parameters(model),
           "best_val_acc": max(history["val_acc"]), "best_epoch": scored["epoch"],
           "best_weights_val_acc": scored["acc"], "final_train_acc": history["train_acc"][-1],
           "seconds_per_epoch": sum(history["seconds"]) / len(history["seconds"]),
           "saved_mib": utils.mib(utils.state_dict_bytes(model))}
    print(f"{name}: best val acc {row['best_val_acc']:.4f} (epoch {row['best_epoch']}), "
          f"{row['seconds_per_epoch']:.1f} s/epoch")
    return row


def model_line(name, history):
    """One line per trained study-01 model: its best accuracy and its speed."""
    return (f"{name:<15} best val acc {max(history['val_acc']):.2%}  {mean(history['seconds']):.1f} s/epoch  "
            f"{mean(history['images_per_s']):.0f} images/s")
