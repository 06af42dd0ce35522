#!/usr/bin/env bash
# The GPU bundle's whole path on the CPU, as a GPU machine would run it (make test-compat calls this):
#   1. a fresh clone makes the bundle for notebook 03 from demo data (the wheels come from the package registry);
#   2. a second fresh clone, holding only the bundle beside its tracked files, runs it with PYTHON, an interpreter
#      that has torch, torchvision and a GPU image's packages but no papermill, ipykernel or nbformat;
#   3. the run must pass and leave summary.txt, metrics.json and the executed notebook.
# Usage: tests/gpu_dry_run.sh PYTHON [run.sh arguments]; default: -p epochs 1 -p max_steps_per_epoch 3 -p val_size 500
# (the demo set has 5,000 training images, the full val_size)
set -euo pipefail
python_bin=${1:?usage: tests/gpu_dry_run.sh PYTHON}
shift
case "$python_bin" in */*) python_bin="$(cd "$(dirname "$python_bin")" && pwd)/$(basename "$python_bin")" ;; esac
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if "$python_bin" -c "import papermill" 2>/dev/null; then
  echo "$python_bin has papermill: the dry run needs an interpreter without it (a GPU image's)" >&2
  exit 2
fi
git clone -q "$repo" "$work/maker"
git clone -q "$repo" "$work/gpu"
cd "$work/maker"
"$python_bin" -m lib.demo --only cifar10 >/dev/null
"$python_bin" -m lib.gpu_bundle make 03 --data data/demo/cifar10
cp -r .gpu-bundle "$work/gpu/"
cd "$work/gpu"
test ! -e data/demo/cifar10  # the data must come out of the bundle
overrides=("$@")
[ ${#overrides[@]} -gt 0 ] || overrides=(-p epochs 1 -p max_steps_per_epoch 3 -p val_size 500)
PYTHON="$python_bin" bash .gpu-bundle/run.sh "${overrides[@]}" --out runs/gpu-dry-run
for f in summary.txt 03_cifar10_resnet.ipynb 03_cifar10_resnet/metrics.json 03_cifar10_resnet/learning_curves.png; do
  test -s "runs/gpu-dry-run/$f" || { echo "missing: runs/gpu-dry-run/$f" >&2; exit 1; }
done
"$python_bin" -c "import papermill" 2>/dev/null && { echo "papermill leaked into $python_bin" >&2; exit 1; }
echo "gpu dry run passed: $(cat runs/gpu-dry-run/summary.txt)"
