"""Prediction and submission files: order-preserving, verified complete before they are written, atomic."""
import argparse
import csv
import io
import os
import sys
import warnings

import torch
from torch.utils.data import DataLoader

from . import folders, models, train
from .files import atomic_torch_save, atomic_write_text, check_not_source, check_replaceable, lock_path_for, locked
from .utils import resolve_device, run_command

# a first character a spreadsheet reads as a formula (=, +, -, @) or that it strips (tab, CR): the cell would not
# hold the file name as it is
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


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


def check_csv_names(names, where):
    """Refuse names a CSV cell cannot hold faithfully: line breaks (one row would read as two) and formula starts."""
    bad = [n for n in names if isinstance(n, str) and (any(c in n for c in "\n\r\x00")
                                                       or n.startswith(FORMULA_STARTS))]
    if bad:
        raise ValueError(f"{where}: {len(bad)} file name(s) a CSV row cannot hold faithfully (first: {bad[0]!r}): a "
                         "line break would split its row and a leading =, +, -, @ makes it a spreadsheet formula. "
                         "Rename those files; nothing was written.")


def write_csv_verified(path, header, keys, labels, expected_keys, valid_labels, what="prediction"):
    """Verify the rows, then write the CSV atomically (a crash never leaves half a file).

    An existing file at `path` is replaced only if it is one of these files (same header): a model, an image or any
    other file given by mistake as the output stays as it was.
    """
    verify_predictions(keys, labels, expected_keys, valid_labels, what)
    check_csv_names(keys, path)
    check_replaceable(path, ",".join(header), f"{what} file")
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


def _is_int(value, low, high=None):
    """True for an int (not a bool) in [low, high]."""
    return isinstance(value, int) and not isinstance(value, bool) and low <= value and (high is None or value <= high)


ARCH_FIELDS = {  # field of a model file's arch -> (test, what it must be)
    "name": (lambda v: v == "resnet50_cbam", "'resnet50_cbam'"),
    "num_classes": (lambda v: _is_int(v, 1), "a whole number >= 1"),
    "use_cbam": (lambda v: isinstance(v, bool), "true or false"),
    "placement": (lambda v: v in models.CBAM_PLACEMENTS, f"one of {models.CBAM_PLACEMENTS}"),
    "reduction": (lambda v: _is_int(v, 1), "a whole number >= 1"),
    "spatial_kernel": (lambda v: _is_int(v, 1, 63) and v % 2 == 1, "an odd whole number from 1 to 63"),
    "dropout": (lambda v: isinstance(v, float) and 0 <= v < 1, "a number in [0, 1)"),
}


def check_model_fields(meta, path):
    """Fail naming the file and the field if a model file's arch, classes or image_size is off (type, range)."""
    def bad(field, found, wanted):
        raise ValueError(f"{path}: field {field!r} is {found!r:.80}, it should be {wanted}. The file is damaged or "
                         "not one notebook 02 wrote: export the model again (notebook 02 writes out_dir/model.pt).")
    arch = meta["arch"]
    if not isinstance(arch, dict):
        bad("arch", arch, "a mapping of the model's settings")
    for field in sorted(set(arch) - set(ARCH_FIELDS)):
        bad(f"arch.{field}", arch[field], f"absent (known fields: {', '.join(ARCH_FIELDS)})")
    for field, (test, wanted) in ARCH_FIELDS.items():
        if field not in arch or not test(arch[field]):
            bad(f"arch.{field}", arch.get(field, "<missing>"), wanted)
    classes = meta["classes"]
    if (not isinstance(classes, (list, tuple)) or not classes or len(set(map(str, classes))) != len(classes)
            or not all(isinstance(c, str) and c.strip() for c in classes)):
        bad("classes", classes, "a list of distinct, non-empty class names")
    if not _is_int(meta["image_size"], 32, 4096):
        bad("image_size", meta["image_size"], "a whole number of pixels from 32 to 4096")


def load_classifier(path, device="cpu"):
    """Rebuild the model a checkpoint or exported model file describes; return (model, classes, image_size).

    The file must carry `arch` (models.resnet50_cbam_arch), `classes` and `image_size`, at its top level (the
    exported model file) or in its `cfg` (the training checkpoints notebook 02 writes).
    """
    ckpt = train.load_checkpoint(path)
    meta = ckpt if isinstance(ckpt, dict) and "arch" in ckpt else (ckpt.get("cfg") if isinstance(ckpt, dict) else {})
    meta = meta if isinstance(meta, dict) else {}
    missing = [k for k in ("arch", "classes", "image_size") if k not in meta]
    if missing or "model" not in ckpt:
        raise ValueError(f"{path} does not say how to rebuild its model (missing {missing or ['model']}). Use the "
                         "model file notebook 02 exports (out_dir/model.pt) or a checkpoint it wrote "
                         "(out_dir/checkpoints/<experiment>/best.pt).")
    check_model_fields(meta, path)
    if meta["arch"].get("num_classes") != len(meta["classes"]):
        raise ValueError(f"{path}: arch has {meta['arch'].get('num_classes')} outputs but {len(meta['classes'])} "
                         "class names: the file is inconsistent; export it again from notebook 02")
    model = models.build_from_arch(meta["arch"])
    train.load_model_state(model, ckpt["model"], path)
    return model.to(device).eval(), list(meta["classes"]), int(meta["image_size"])


def left_out_files(test_dir, dataset):
    """(name, reason) for every file of the test folder the dataset will not predict, so none vanishes silently."""
    from PIL import Image
    listed = set(dataset.names)
    found = [(os.path.basename(p), "could not be decoded") for p in dataset.skipped_images]
    with os.scandir(test_dir) as scan:
        entries = sorted(scan, key=lambda e: e.name)
    for entry in entries:
        if entry.name in listed or folders.is_clutter(entry.name) or not entry.is_file():
            continue
        if entry.name.lower().endswith(folders.IMAGE_EXTENSIONS):
            continue  # left out as undecodable above
        try:
            with Image.open(entry.path) as image:
                kind = image.format
            reason = f"a {kind} image, but its extension is not one of {', '.join(folders.IMAGE_EXTENSIONS)}"
        except Exception:  # noqa: BLE001 - whatever PIL raises, the file is not an image it reads
            reason = "not an image"
        found.append((entry.name, reason))
    return found


def warn_left_out(test_dir, dataset):
    """Warn naming the files of the test folder that get no prediction, each with its reason."""
    left_out = left_out_files(test_dir, dataset)
    if left_out:
        shown = "; ".join(f"{name!r}: {reason}" for name, reason in left_out[:5])
        warnings.warn(f"{test_dir}: {len(left_out)} file(s) get no prediction ({shown}"
                      f"{'; ...' if len(left_out) > 5 else ''}). To include an image, give it one of the listed "
                      "extensions (or replace an undecodable one).", stacklevel=2)
    return left_out


def predict_folder(model, test_dir, classes, image_size, out_path, *, batch_size=64, device="cpu", num_workers=0,
                   amp=None, skip_bad_images=False):
    """Predict every image of a flat folder in sorted file-name order and write `image_name,pred_label` (verified).

    Returns the path written. The file is written only if every image appears exactly once, in order, with a
    class name from `classes`; images of any mode are read as RGB. skip_bad_images=True leaves out (with a
    warning giving the count) the images that cannot be decoded; otherwise the first one stops it, named.
    """
    dataset = folders.FlatImageFolder(test_dir, folders.imagenet_eval_transform(image_size), skip_bad_images)
    check_csv_names(dataset.names, test_dir)
    warn_left_out(test_dir, dataset)
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
    """Load a saved model and write its verified prediction CSV for a flat test folder; return the path.

    The output must not be the model file or lie inside the test folder, and an existing file there must be a
    prediction file (lib.files' rule): a mistaken --out stops before anything is written.
    """
    check_not_source(out_path, {"checkpoint": checkpoint, "test folder": test_dir}, "prediction file")
    check_replaceable(out_path, "image_name,pred_label", "prediction file")
    # a second writer of the same CSV stops at once, naming this one, instead of racing it
    with locked(lock_path_for(out_path), f"prediction file {out_path}"):
        model, classes, image_size = load_classifier(checkpoint, device)
        return predict_folder(model, test_dir, classes, image_size, out_path, batch_size=batch_size, device=device,
                              num_workers=num_workers, amp=amp, skip_bad_images=skip_bad_images)


def read_test_labels(path, names, classes):
    """{image name: class name} from a test_labels CSV (`image_name,label`), which must cover every test image.

    Read before training, so a file that names other images (it would score 0.0 and pass) stops the run first.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"test_labels {path!r} not found: give the CSV of image_name,label, or '' for none.")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.reader(fh))
    if not rows or [c.strip() for c in rows[0][:2]] != ["image_name", "label"]:
        raise ValueError(f"{path}: the header should start image_name,label, found {rows[0] if rows else 'nothing'}. "
                         "Fix the file's first line.")
    truth, repeated = {}, []
    for row in rows[1:]:
        if len(row) < 2:
            raise ValueError(f"{path}: row {row!r} should hold an image name and a label. Fix that row.")
        repeated += [row[0]] if row[0] in truth else []
        truth[row[0]] = row[1]
    missing = [n for n in names if n not in truth]
    unknown = sorted({label for n, label in truth.items() if n in set(names)} - set(classes))
    problems = ([f"{len(repeated)} names repeated (first: {repeated[:3]})"] if repeated else []) + (
        [f"{len(missing)} of the {len(names)} test images have no label (first: {missing[:3]})"] if missing else []) + (
        [f"{len(unknown)} labels are not classes of the training data (first: {unknown[:3]})"] if unknown else [])
    if problems:
        raise ValueError(f"{path}: field 'image_name'/'label' does not match the test folder: " + "; ".join(problems)
                         + ". Point test_labels at the labels of this test folder, or '' to skip the scoring.")
    return {n: truth[n] for n in names}


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
    with open(path, newline="", encoding="utf-8") as fh:
        rows = sum(1 for _ in csv.reader(fh)) - 1
    print(f"wrote {path}: {rows} predictions")
    return path


if __name__ == "__main__":
    sys.exit(run_command(main, "python -m lib.predict"))
