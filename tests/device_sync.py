"""Counting what makes a host wait for a device, on a CPU-only machine: the "meta" device stands in for a GPU.

Meta tensors carry shapes and no data, so every op a CUDA run would queue runs on them instantly, while the
two modes below see each host-device copy and each read back. Reads back are answered with zeros, which lets the
code under test go on as it would on a GPU. What is counted:
- `h2d_blocking`: a copy from host to device that is not `non_blocking` (from pageable memory it waits for the
  device's queue), including a tensor built from Python numbers on the device (`torch.tensor(..., device=...)`);
- `h2d_async`: a `non_blocking` copy from host to device (from pinned memory: no wait);
- `d2h`: a copy back to the host, `.item()`, `.tolist()` or an op whose output size depends on the data
  (`nonzero`, boolean masks): the host waits for the device.
"""
import collections
import traceback

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

DEVICE = torch.device("meta")
DATA_DEPENDENT = {torch.ops.aten.nonzero.default, torch.ops.aten.masked_select.default,
                  torch.ops.aten._unique2.default, torch.ops.aten.unique_consecutive.default}
FACTORIES = {torch.tensor, torch.as_tensor, torch.asarray}


def _on_device(value):
    return isinstance(value, torch.Tensor) and value.device.type != "cpu"


def _where(kind):
    """The first frame of the project's code above this module: where the copy or read was made."""
    frames = [f for f in traceback.extract_stack()[:-3]
              if "site-packages" not in f.filename and ("/lib/" in f.filename or "/tests/test_" in f.filename)]
    return f"{kind} at {frames[-1].filename.rsplit('/', 2)[-1]}:{frames[-1].lineno}" if frames else kind


class _Factories(TorchFunctionMode):
    """Sees `torch.tensor(numbers, device=...)`, which builds on the host and copies below the dispatcher."""

    def __init__(self, counts):
        super().__init__()
        self.counts = counts

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        device = kwargs.get("device")
        if func in FACTORIES and device is not None and torch.device(device).type != "cpu" \
                and not _on_device(args[0] if args else kwargs.get("data")):
            self.counts["h2d_blocking"] += 1
            self.counts.sites.append(_where("torch.tensor onto the device"))
        return func(*args, **kwargs)


class _Copies(TorchDispatchMode):
    """Sees every aten op: copies between host and device, reads back, data-dependent shapes."""

    def __init__(self, counts):
        super().__init__()
        self.counts = counts

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        aten = torch.ops.aten
        if func is aten._to_copy.default and "device" in kwargs:
            source, target = args[0].device, torch.device(kwargs["device"] or args[0].device)
            if source.type == "cpu" and target.type != "cpu":
                kind = "h2d_async" if kwargs.get("non_blocking") else "h2d_blocking"
                self.counts[kind] += 1
                self.counts.sites.append(_where(kind))
            elif source.type != "cpu" and target.type == "cpu":
                self._read()
                return torch.zeros(args[0].shape, dtype=kwargs.get("dtype") or args[0].dtype)
        if func is aten.copy_.default and args[0].device != args[1].device:
            if args[1].device.type == "cpu":
                self.counts["h2d_async" if len(args) > 2 and args[2] else "h2d_blocking"] += 1
            else:
                self._read()
        if func is aten._local_scalar_dense.default and _on_device(args[0]):
            self._read()
            return 0
        if func in DATA_DEPENDENT and _on_device(args[0]):
            self._read()
        return func(*args, **kwargs)

    def _read(self):
        self.counts["d2h"] += 1
        self.counts.sites.append(_where("read back"))


class Counts(collections.Counter):
    """Counter of h2d_blocking, h2d_async and d2h, with `sites` naming where each one happened."""

    def __init__(self):
        super().__init__()
        self.sites = []


class count_device_traffic:  # noqa: N801 (used as a context manager, like torch's modes)
    """`with count_device_traffic() as counts:` counts the copies and reads of the block (see the module)."""

    def __enter__(self):
        self.counts = Counts()
        self._modes = [_Factories(self.counts), _Copies(self.counts)]
        for mode in self._modes:
            mode.__enter__()
        return self.counts

    def __exit__(self, *exc):
        for mode in reversed(self._modes):
            mode.__exit__(*exc)
        return False
