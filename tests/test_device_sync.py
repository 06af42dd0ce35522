"""No host wait per batch on a GPU: the loaders and the training loop, counted on the meta device (device_sync).

A host-to-device copy from pageable memory, `torch.tensor(..., device=...)` or a read back (`.item()`, `.tolist()`)
drains the GPU's queue; one per batch leaves the GPU idle between steps. Where CUDA exists, the last test asks
torch itself (`torch.cuda.set_sync_debug_mode("error")`).
"""
import pytest
import torch

from device_sync import DEVICE, count_device_traffic
from lib import cifar, folder_cache, models, train


def _images(n=120):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    return images, torch.randint(0, 10, (n,), generator=g)


def _epoch_traffic(loader):
    with count_device_traffic() as counts:
        batches = sum(1 for _ in loader)
    return counts, batches


@pytest.mark.parametrize("train_mode", [True, False])
def test_cifar_loader_copies_once_per_epoch_and_never_waits(train_mode):
    x, y = _images()
    few, few_batches = _epoch_traffic(cifar.TensorBatchLoader(x, y, 60, train=train_mode, device=DEVICE))
    many, many_batches = _epoch_traffic(cifar.TensorBatchLoader(x, y, 20, train=train_mode, device=DEVICE,
                                                                channels_last=True))
    assert (few_batches, many_batches) == (2, 6)
    assert many == few, f"copies that grow with the number of batches: {many.sites}"
    assert many["h2d_blocking"] == 0 and many["d2h"] == 0, many.sites


def _meta_model():
    model = models.CifarResNet((8, 16), (1, 1), dropout=0.2).to(DEVICE, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return model, optimizer


@pytest.mark.parametrize("scheduler", [None, "warm_restarts"])
def test_a_training_epoch_reads_the_device_once_at_its_end(scheduler):
    x, y = _images()
    model, optimizer = _meta_model()
    if scheduler:
        scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=2)
    loader = cifar.TensorBatchLoader(x, y, 20, train=True, device=DEVICE, channels_last=True)
    with count_device_traffic() as counts:
        train.train_one_epoch(model, loader, optimizer, torch.nn.CrossEntropyLoss(), device=DEVICE, amp="fp32",
                              scaler=torch.amp.GradScaler("cpu", enabled=False), scheduler=scheduler, epoch=0,
                              steps=len(loader), progress=False, refresh_s=float("inf"))
    # the epoch plan's order and crop choices (4 non-blocking copies), then one read of the totals at the end
    assert counts["h2d_blocking"] == 0 and counts["h2d_async"] == 4 and counts["d2h"] == 1, counts.sites


def test_evaluation_reads_the_device_once():
    x, y = _images()
    model, _ = _meta_model()
    loader = cifar.TensorBatchLoader(x, y, 20, train=False, device=DEVICE, channels_last=True)
    with count_device_traffic() as counts:
        train.evaluate(model, loader, DEVICE, amp="fp32")
    assert counts["h2d_blocking"] == 0 and counts["h2d_async"] == 0 and counts["d2h"] == 1, counts.sites


def test_folder_batches_are_made_on_the_cpu_and_copied_without_blocking(demo_root, tmp_path):
    """The folder pipeline makes whole batches on the CPU threads; the loop copies each (images, labels) pair
    non_blocking (from pinned memory on CUDA), so a batch costs two asynchronous copies and no wait."""
    loaders, classes = folder_cache.folder_loaders(demo_root / "imagenet-mini", image_size=32, batch_size=16,
                                                   num_workers=1, cache_dir=tmp_path, device=DEVICE,
                                                   progress=False, channels_last=True)
    model = models.StrictTwoLayerNet(len(classes)).to(DEVICE, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    steps = 3
    with count_device_traffic() as counts:
        train.train_one_epoch(model, loaders["train"], optimizer, torch.nn.CrossEntropyLoss(), device=DEVICE,
                              amp="fp32", scaler=torch.amp.GradScaler("cpu", enabled=False), scheduler=None,
                              epoch=0, steps=steps, progress=False, refresh_s=float("inf"))
    assert counts["h2d_blocking"] == 0 and counts["h2d_async"] == 2 * steps and counts["d2h"] == 1, counts.sites
    with count_device_traffic() as counts:
        evaluated = train.evaluate(model, loaders["val"], DEVICE, amp="fp32")
    batches = len(loaders["val"])
    assert counts["h2d_blocking"] == 0 and counts["h2d_async"] == 2 * batches and counts["d2h"] == 1, counts.sites
    assert evaluated["count"] == len(loaders["val"].cache)


def test_the_counter_sees_what_makes_the_host_wait():
    """The counter itself: each kind of wait is seen, or the tests above could pass by seeing nothing."""
    with count_device_traffic() as counts:
        on_device = torch.ones(3).to(DEVICE)  # pageable copy: blocking
        torch.tensor([1.0, 2.0], device=DEVICE)  # built on the host, copied
        torch.ones(3).to(DEVICE, non_blocking=True)
        on_device.sum().item()
        on_device.tolist()
    assert (counts["h2d_blocking"], counts["h2d_async"], counts["d2h"]) == (2, 1, 2), counts


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: torch's own sync check")
def test_no_synchronisation_per_step_on_cuda(monkeypatch):
    x, y = _images()
    device = torch.device("cuda")
    model = models.CifarResNet((8, 16), (1, 1), dropout=0.2).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loader = cifar.TensorBatchLoader(x, y, 20, train=True, device=device, channels_last=True)
    read_totals = train._read_totals

    def allowed_read(*args):  # the one read per epoch (and per few seconds) is by design
        torch.cuda.set_sync_debug_mode(0)
        try:
            return read_totals(*args)
        finally:
            torch.cuda.set_sync_debug_mode("error")

    monkeypatch.setattr(train, "_read_totals", allowed_read)
    torch.cuda.set_sync_debug_mode("error")  # any other synchronising call raises
    try:
        train.train_one_epoch(model, loader, optimizer, torch.nn.CrossEntropyLoss(), device=device, amp="bf16",
                              scaler=torch.amp.GradScaler("cuda", enabled=False), scheduler=None, epoch=0,
                              steps=len(loader), progress=False, refresh_s=float("inf"))
    finally:
        torch.cuda.set_sync_debug_mode(0)
