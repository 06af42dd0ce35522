"""Prediction and submission files: order-preserving, verified complete before they are written, atomic."""
import csv
import io

from .utils import atomic_write_text


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
    unknown = [l for l in labels if l not in valid]
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
    labels = [int(l) for l in predicted_labels]
    return write_csv_verified(path, ("ID", "Labels"), ids, labels, ids, range(num_classes), "submission")
