"""Unit tests of lib.precision and of the training loop's speed contract: precision chosen per device, float16 with
loss scaling (an overflowing step is skipped), channels_last batches from every loader, and a loop whose reads
back to the host do not grow with the number of steps."""
import pytest
import torch

from lib import cifar, folder_cache, models, precision, train

# ---------------------------------------------------------------- what auto picks

def test_auto_precision_asks_torch_about_the_cpu(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert precision.resolve_amp(None, "cpu") == "bf16" and precision.resolve_amp(True, "cpu") == "bf16"
    assert precision.resolve_channels_last(None, "cpu", "bf16") is True
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert precision.resolve_amp(None, "cpu") == "fp32"
    assert precision.resolve_channels_last(None, "cpu", "fp32") is False


def test_auto_precision_on_cuda_is_bf16_from_ampere_and_fp16_before(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))  # T4
    assert precision.resolve_amp(None, "cuda") == "fp16"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))  # H100
    assert precision.resolve_amp(None, "cuda") == "bf16"
    assert precision.resolve_channels_last(None, "cuda", "fp16") is True


def test_explicit_precision_wins_and_a_wrong_one_is_a_clear_error():
    assert [precision.resolve_amp(a, "cpu") for a in (False, "fp32", "bf16", "fp16")] == ["fp32", "fp32", "bf16",
                                                                                           "fp16"]
    assert precision.resolve_channels_last(False, "cuda", "bf16") is False
    with pytest.raises(ValueError, match="'float16' is not a precision"):
        precision.resolve_amp("float16", "cpu")


def test_cpu_check_agrees_with_the_flags_linux_reports():
    """The capability check asks torch; on Linux the kernel's CPU flags must say the same."""
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        pytest.skip("no /proc/cpuinfo")
    assert precision.cpu_has_native_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)


# ---------------------------------------------------------------- float16 with a gradient scaler, on the CPU

def _tiny(seed=0, n=64):
    torch.manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8)
    labels = torch.randint(0, 10, (n,))
    model = models.CifarResNet((8, 16), (1, 1), dropout=0.0)
    return model, images, labels


def test_fp16_trains_through_a_gradient_scaler_on_the_cpu(tmp_path):
    model, images, labels = _tiny()
    loader = cifar.TensorBatchLoader(images, labels, 16, train=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    history = train.loop(model, loader, loader, epochs=2, optimizer=optimizer, amp="fp16", checkpoint_dir=tmp_path,
                        progress=False)
    assert all(torch.isfinite(torch.tensor(history["train_loss"])))
    scaler = train.load_checkpoint(tmp_path / "last.pt")["scaler"]
    assert scaler is not None and scaler["scale"] > 0  # saved, so a resumed fp16 run continues with its scale


def test_an_overflowing_fp16_step_is_skipped_and_the_scale_halves():
    model, images, labels = _tiny()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    scaler = precision.grad_scaler("cpu", "fp16")
    assert scaler.is_enabled()
    before = {k: v.detach().clone() for k, v in model.named_parameters()}  # BatchNorm's statistics move anyway
    loss = torch.nn.functional.cross_entropy(model(images[:8].float()), labels[:8])
    scaler.scale(loss * float("inf")).backward()  # gradients overflow, as float16 ones do when the scale is too high
    scale = scaler.get_scale()
    scaler.step(optimizer)
    scaler.update()
    assert all(torch.equal(before[k], v) for k, v in model.named_parameters()), "the overflowing step was applied"
    assert scaler.get_scale() == scale / 2
    optimizer.zero_grad()
    scaler.scale(torch.nn.functional.cross_entropy(model(images[:8].float()), labels[:8])).backward()
    scaler.step(optimizer)  # a finite step goes through
    assert any(not torch.equal(before[k], v) for k, v in model.named_parameters())


def test_bf16_and_fp32_are_each_reproducible():
    """Same seed, same machine, same numbers, in either precision."""
    runs = {}
    for amp in ("bf16", "bf16", False, False):
        model, images, labels = _tiny()
        loader = cifar.TensorBatchLoader(images, labels, 16, train=True, seed=3)
        history = train.loop(model, loader, loader, epochs=1, optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
                            amp=amp, progress=False)
        runs.setdefault(amp, []).append(history["train_loss"] + history["val_loss"])
    assert runs["bf16"][0] == runs["bf16"][1] and runs[False][0] == runs[False][1]
    assert runs["bf16"][0] != runs[False][0]  # the precision switch really changes the arithmetic


# ---------------------------------------------------------------- channels_last comes from the loaders

def test_tensor_loader_gives_channels_last_batches_with_the_same_values():
    _, images, labels = _tiny()
    for train_mode in (True, False):
        plain = cifar.TensorBatchLoader(images, labels, 16, train=train_mode, seed=1)
        last = cifar.TensorBatchLoader(images, labels, 16, train=train_mode, seed=1, channels_last=True)
        for (a, _), (b, _) in zip(plain, last):
            assert b.is_contiguous(memory_format=torch.channels_last) and not a.is_contiguous(
                memory_format=torch.channels_last)
            assert torch.equal(a, b)


@pytest.mark.parametrize("pipeline", ["cached", "naive"])
def test_folder_loaders_give_channels_last_batches_with_the_same_values(demo_root, tmp_path, pipeline):
    common = dict(image_size=32, batch_size=8, seed=0, progress=False, pipeline=pipeline,
                  cache_dir=tmp_path / "cache")
    plain, _ = folder_cache.folder_loaders(demo_root / "imagenet-mini", **common)
    last, _ = folder_cache.folder_loaders(demo_root / "imagenet-mini", channels_last=True, **common)
    for split in ("train", "val"):
        torch.manual_seed(0)  # the naive pipeline's PIL transforms draw from the global generator
        a, _ = next(iter(plain[split]))
        torch.manual_seed(0)
        b, _ = next(iter(last[split]))
        assert b.is_contiguous(memory_format=torch.channels_last), split
        assert torch.allclose(a, b, atol=1e-6), split


def test_fit_puts_the_model_in_the_memory_format_it_resolves():
    model, images, labels = _tiny()
    loader = cifar.TensorBatchLoader(images, labels, 32, train=True, channels_last=True)
    train.loop(model, loader, loader, epochs=1, optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
              amp="bf16", channels_last=None, progress=False)
    conv = model.stem[0].weight if hasattr(model, "stem") else next(p for p in model.parameters() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last)


# ---------------------------------------------------------------- the loop does not wait on the host

HOST_READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")


def _count_host_reads(monkeypatch):
    """Wrap every Tensor method that brings a value to the host; return the list each call is recorded in."""
    calls = []
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, _original=original, _name=name, **kwargs):
            calls.append(_name)
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, wrapper)
    return calls


@pytest.mark.parametrize("amp", ["bf16", False])
def test_host_reads_per_epoch_do_not_grow_with_the_steps(monkeypatch, amp):
    monkeypatch.setattr(train, "REFRESH_S", 3600.0)  # no progress refresh falls inside so short an epoch
    counts = {}
    for steps in (2, 8):
        model, images, labels = _tiny(n=16 * steps)
        loader = cifar.TensorBatchLoader(images, labels, 16, train=True)
        val = cifar.TensorBatchLoader(images[:32], labels[:32], 16, train=False)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, 0.05, total_steps=steps)  # stepped every batch
        with monkeypatch.context() as patch:
            calls = _count_host_reads(patch)
            train.loop(model, loader, val, epochs=1, optimizer=optimizer, scheduler=scheduler, amp=amp,
                      progress=False)
        counts[steps] = len(calls)
    assert counts[2] == counts[8], f"host reads grow with the steps: {counts}"
    assert counts[2] <= 4, f"more than the epoch-end reads: {counts}"  # train totals, val totals


def test_the_counter_sees_a_read_per_step(monkeypatch):
    """The test above can fail: the same counter sees a loop that reads the loss every step."""
    model, images, labels = _tiny(n=64)
    loader = cifar.TensorBatchLoader(images, labels, 16, train=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    calls = _count_host_reads(monkeypatch)
    for x, y in loader:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        loss.item()
    assert len(calls) == len(loader)


def test_progress_reads_come_at_most_every_refresh(monkeypatch):
    """With a zero refresh interval every step reads: the interval is what bounds them."""
    monkeypatch.setattr(train, "REFRESH_S", 0.0)
    model, images, labels = _tiny(n=64)
    loader = cifar.TensorBatchLoader(images, labels, 16, train=True)
    calls = _count_host_reads(monkeypatch)
    train.train_one_epoch(model, loader, torch.optim.SGD(model.parameters(), lr=0.01), torch.nn.CrossEntropyLoss(),
                          device="cpu", amp="fp32", scaler=precision.grad_scaler("cpu", "fp32"), scheduler=None,
                          epoch=0, steps=len(loader), progress=False, refresh_s=train.REFRESH_S)
    assert calls.count("tolist") == len(loader) + 1


def test_a_non_finite_loss_stops_the_run_naming_the_epoch():
    model, images, labels = _tiny()
    loader = cifar.TensorBatchLoader(images, labels, 16, train=True)
    with pytest.raises(FloatingPointError, match="epoch 1.*lower the learning rate"):
        train.loop(model, loader, loader, epochs=1, optimizer=torch.optim.SGD(model.parameters(), lr=1e30),
                  amp=False, progress=False)
