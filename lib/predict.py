"""Prediction and submission files: order-preserving, verified complete before they are written, atomic."""
import argparse
import csv
import io
import os

import torch
from torch.utils.data import DataLoader

from . import folders, models, train
from .files import atomic_torch_save, atomic_write_text, lock_path_for, locked
from .utils import resolve_device


def verify_predictions(keys, labels, expected_keys, valid_labels, what="prediction"):
    """Check every expected key appears exactly once, in the expected order, with a known label."""
    keys, expected_keys = list(keys), list(expected_keys)
    valid = set(valid_labels)
    problems = []
    if len(keys) != len(labels):
        problems.append(f"{len(keys)} keys but {len(labels)} labels")
    seen, duplicates = set(), []
    for k in keys:
        if k in seen:
            duplicates.append(k)
        seen.add(k)
    if duplicates:
        problems.append(f"{len(duplicates)} duplicated (first: {duplicates[:3]})")
    missing = [k for k in expected_keys if k not in seen]
    if missing:
        problems.append(f"{len(missing)} missing (first: {missing[:3]})")
    extra = sorted(seen - set(expected_keys), key=str)
    if extra:
        problems.append(f"{len(extra)} unexpected (first: {extra[:3]})")
    if not problems and keys != expected_keys:
        problems.append("rows are not in the input order")
    unknown = [label for label in labels if label not in valid]
    if unknown:
        problems.append(f"{len(unknown)} labels outside the known classes (first: {unknown[:3]})")
    if problems:
        raise ValueError(f"refusing to write an incomplete {what} file: " + "; ".join(problems))


def write_csv_verified(path, header, keys, labels, expected_keys, valid_labels, what="prediction"):
    """Verify the rows, then write the CSV atomically (a crash never leaves half a file)."""
    verify_predictions(keys, labels, expected_keys, valid_labels, what)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(zip(keys, labels))
    atomic_write_text(path, buffer.getvalue())
    return path


def write_cifar_submission(path, ids, predicted_labels, num_classes=10):
    """Kaggle submission `ID,Labels` for the unlabeled CIFAR test pickle, one row per id in the file's order."""
    ids = [int(i) for i in ids]
    labels = [int(label) for label in predicted_labels]
    return write_csv_verified(path, ("ID", "Labels"), ids, labels, ids, range(num_classes), "submission")


# ---------------------------------------------------------------- study 02: a flat test folder of images

def save_classifier(path, model, arch, classes, image_size, **extra):
    """Write the deliverable model file (weights, arch, classes, image size; no optimizer) atomically; return bytes."""
    if arch["num_classes"] != len(classes):
        raise ValueError(f"arch says {arch['num_classes']} classes but {len(classes)} class names were given")
    atomic_torch_save({"model": model.state_dict(), "arch": dict(arch), "classes": list(classes),
                       "image_size": int(image_size), **extra}, path)
    return os.path.getsize(path)


def load_classifier(path, device="cpu"):
    """Rebuild the model a checkpoint or exported model file describes; return (model, classes, image_size).

    The file must carry `arch` (models.resnet50_cbam_arch), `classes` and `image_size`, at its top level (the
    exported model file) or in its `cfg` (the training checkpoints notebook 02 writes).
    """
    ckpt = train.load_checkpoint(path)
    meta = ckpt if "arch" in ckpt else (ckpt.get("cfg") or {})
    missing = [k for k in ("arch", "classes", "image_size") if k not in meta]
    if missing or "model" not in ckpt:
        raise ValueError(f"{path} does not say how to rebuild its model (missing {missing or ['model']}). Use the "
                         "model file notebook 02 exports (out_dir/model.pt) or a checkpoint it wrote "
                         "(out_dir/checkpoints/<experiment>/best.pt).")
    if meta["arch"].get("num_classes") != len(meta["classes"]):
        raise ValueError(f"{path}: arch has {meta['arch'].get('num_classes')} outputs but {len(meta['classes'])} "
                         "class names: the file is inconsistent; export it again from notebook 02")
    model = models.build_from_arch(meta["arch"])
    train.load_model_state(model, ckpt["model"], path)
    return model.to(device).eval(), list(meta["classes"]), int(meta["image_size"])


def predict_folder(model, test_dir, classes, image_size, out_path, *, batch_size=64, device="cpu", num_workers=0,
                   amp=None, skip_bad_images=False):
    """Predict every image of a flat folder in sorted file-name order and write `image_name,pred_label` (verified).

    Returns the path written. The file is written only if every image appears exactly once, in order, with a
    class name from `classes`; images of any mode are read as RGB. skip_bad_images=True leaves out (with a
    warning giving the count) the images that cannot be decoded; otherwise the first one stops it, named.
    """
    dataset = folders.FlatImageFolder(test_dir, folders.imagenet_eval_transform(image_size), skip_bad_images)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    model.to(device).eval()
    names, indices = [], []
    with torch.no_grad():
        for x, batch_names in loader:
            with train.autocast(device, amp):
                logits = model(x.to(device, non_blocking=True))
            if logits.shape[1] != len(classes):
                raise ValueError(f"the model has {logits.shape[1]} outputs but {len(classes)} class names were given")
            indices += logits.argmax(1).tolist()
            names += list(batch_names)
    labels = [classes[i] for i in indices]
    return write_csv_verified(out_path, ("image_name", "pred_label"), names, labels, dataset.names, classes)


def predict_test_folder(checkpoint, test_dir, out_path, *, batch_size=64, device="cpu", num_workers=0, amp=None,
                        skip_bad_images=False):
    """Load a saved model and write its verified prediction CSV for a flat test folder; return the path."""
    # a second writer of the same CSV stops at once, naming this one, instead of racing it
    with locked(lock_path_for(out_path), f"prediction file {out_path}"):
        model, classes, image_size = load_classifier(checkpoint, device)
        return predict_folder(model, test_dir, classes, image_size, out_path, batch_size=batch_size, device=device,
                              num_workers=num_workers, amp=amp, skip_bad_images=skip_bad_images)


def main(argv=None):
    """Command line: python -m lib.predict --checkpoint model.pt --test-dir data/hw1/test --out prediction.csv."""
    parser = argparse.ArgumentParser(prog="python -m lib.predict", description=(
        "Write image_name,pred_label for every image of a flat test folder, in sorted file-name order, using a "
        "model saved by notebook 02 (out_dir/model.pt or a training checkpoint). The CSV is verified complete "
        "before it is written, atomically."))
    parser.add_argument("--checkpoint", required=True, help="model file: out_dir/model.pt from notebook 02")
    parser.add_argument("--test-dir", required=True, help="flat folder of test images")
    parser.add_argument("--out", default="prediction.csv", help="CSV to write (default: prediction.csv)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--skip-bad-images", action="store_true",
                        help="leave out (and count) test images that cannot be decoded instead of stopping")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    path = predict_test_folder(args.checkpoint, args.test_dir, args.out, batch_size=args.batch_size, device=device,
                               num_workers=args.num_workers, skip_bad_images=args.skip_bad_images)
    with open(path) as fh:
        rows = sum(1 for _ in fh) - 1
    print(f"wrote {path}: {rows} predictions")
    return path


if __name__ == "__main__":
    main()
