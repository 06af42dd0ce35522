"""The training recipes of studies 01 and 02, and the tables and verdict built from their results.

Study 01 trains StrictTwoLayerNet, its ablations and ResNet34 with one recipe (Adam, ReduceLROnPlateau) and asks
whether the two-layer net reaches 90% of ResNet34's accuracy. Study 02 trains ResNet50 with and without CBAM, under
cross-entropy and focal loss (AdamW, cosine warm restarts). The hyper-parameters come from the run's `cfg`, under
the notebooks' parameter names.
"""
import os
from statistics import mean

import pandas as pd
import torch

from lib import losses, models, train, utils
from lib.session import score_checkpoint

GOAL = 0.9  # study 01's target: at least 90% of the baseline's accuracy
# study 02's experiments, name -> (CBAM modules?, loss): the two factors of the write-up's comparisons
EXPERIMENTS = {"resnet50_ce": (False, "ce"), "resnet50_focal": (False, "focal"),
               "cbam_ce": (True, "ce"), "cbam_focal": (True, "focal")}


def train_variants(names, variants, loaders, run):
    """Train each named study-01 model with one recipe, re-seeding before each; return (histories, models).

    Re-seeding makes a model's initial weights and batch order independent of which others are in `names`.
    """
    cfg = run.cfg
    histories, trained = {}, {}
    for name in names:
        utils.seed_everything(cfg["seed"])
        model = variants[name]()
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=cfg["plateau_factor"],
                                                               patience=cfg["plateau_patience"])
        histories[name] = train.train_model(
            model, loaders["train"], loaders["val"], epochs=cfg["epochs"], optimizer=optimizer,
            loss_fn=torch.nn.CrossEntropyLoss(), scheduler=scheduler, device=run.device,
            checkpoint_dir=run.path("checkpoints", name), cfg=cfg, resume=cfg["resume"],
            max_steps_per_epoch=cfg["max_steps_per_epoch"], amp=run.amp, channels_last=run.channels_last,
            compile=run.compile, name=name)
        trained[name] = model
        h = histories[name]
        print(f"{name:<15} best val acc {max(h['val_acc']):.2%}  {mean(h['seconds']):.1f} s/epoch  "
              f"{mean(h['images_per_s']):.0f} images/s")
    return histories, trained


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


def two_layer_verdict(comparison, run, published):
    """Study 01's verdict from this run alone: (text, relative performance, relative size, goal met).

    `published` is the write-up's (two-layer, ResNet34) accuracy on the real data, quoted for reference only.
    """
    names, epochs, image_size = run.cfg["model_names"], run.cfg["epochs"], run.cfg["image_size"]
    data_kind = run.data_kind
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
        goal_met = relative_performance >= GOAL
        verdict = (f"On this run's **{data_kind} data** the two-layer net reached **{relative_performance:.1%}** of "
                   f"ResNet34's best validation accuracy ({two:.2%} against {base:.2%}) with {relative_size:.1%} of "
                   f"its parameters: the 90% goal is **{'met' if goal_met else 'not met'}**.")
    if data_kind == "demo" or (epochs, image_size) != (20, 224) or run.cfg["max_steps_per_epoch"] is not None:
        verdict += (f" This run ({data_kind} data, {epochs} epochs at {image_size} px) is not the study's setting, "
                    "so it says nothing about the write-up's claim either way.")
    two_pub, base_pub = published
    verdict += (f" For reference, the write-up reports {two_pub:.2%} against {base_pub:.2%} on the real "
                f"ImageNet-mini, {two_pub / base_pub:.1%} of the baseline.")
    return verdict, relative_performance, relative_size, goal_met


def cbam_arch_kwargs(cfg):
    """Study 02's architecture settings from cfg, as models.resnet50_cbam takes them."""
    return dict(placement=cfg["cbam_placement"], reduction=cfg["cbam_reduction"],
                spatial_kernel=cfg["spatial_kernel"], dropout=cfg["dropout"])


def make_loss(kind, focal_gamma):
    """Study 02's loss: focal loss with `focal_gamma`, or plain cross-entropy."""
    return losses.FocalLoss(gamma=focal_gamma) if kind == "focal" else torch.nn.CrossEntropyLoss()


def train_experiment(name, run, loaders, classes, backbone_state, pretrained):
    """Train one study-02 experiment and score its best weights; return (model, arch, history, scored, row).

    `scored` is evaluate's dict for best.pt with per-image predictions (the per-class view needs them); `row` is
    the experiment's line of the results table.
    """
    cfg = run.cfg
    use_cbam, loss_kind = EXPERIMENTS[name]
    arch_kwargs = cbam_arch_kwargs(cfg)
    utils.seed_everything(cfg["seed"])  # same head initialisation and data order for every experiment
    model = models.resnet50_cbam(len(classes), use_cbam=use_cbam, backbone_state=backbone_state, **arch_kwargs)
    arch = models.resnet50_cbam_arch(len(classes), use_cbam=use_cbam, **arch_kwargs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=cfg["T_0"], T_mult=cfg["T_mult"],
                                                                     eta_min=cfg["eta_min"])
    checkpoint_dir = run.path("checkpoints", name)
    run_cfg = dict(cfg, experiment=name, arch=arch, classes=classes, pretrained=pretrained)
    history = train.train_model(model, loaders["train"], loaders["val"], epochs=cfg["epochs"], optimizer=optimizer,
                                loss_fn=make_loss(loss_kind, cfg["focal_gamma"]), scheduler=scheduler,
                                device=run.device, checkpoint_dir=checkpoint_dir, cfg=run_cfg, resume=cfg["resume"],
                                max_steps_per_epoch=cfg["max_steps_per_epoch"], amp=run.amp,
                                channels_last=run.channels_last, compile=run.compile, name=name)
    # score the best epoch's weights (what is exported)
    scored = score_checkpoint(model, os.path.join(checkpoint_dir, "best.pt"), loaders["val"], run.device, amp=run.amp)
    row = {"use_cbam": use_cbam, "loss": loss_kind, "parameters": utils.count_parameters(model),
           "best_val_acc": max(history["val_acc"]), "best_epoch": scored["epoch"],
           "best_weights_val_acc": scored["acc"], "final_train_acc": history["train_acc"][-1],
           "seconds_per_epoch": sum(history["seconds"]) / len(history["seconds"]),
           "saved_mib": utils.mib(utils.state_dict_bytes(model))}
    print(f"{name}: best val acc {row['best_val_acc']:.4f} (epoch {row['best_epoch']}), "
          f"{row['seconds_per_epoch']:.1f} s/epoch")
    return model, arch, history, scored, row
