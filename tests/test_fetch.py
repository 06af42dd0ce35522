"""`python -m lib.fetch` without a network: torchvision's real download paths fed by a local HTTP server with
matching checksums, and an offline run that fails fast with guidance."""
import functools
import hashlib
import http.server
import socket
import tarfile
import threading
import time

import pytest
import torch
import torchvision
from torchvision.models._api import Weights, WeightsEnum

from lib import demo, fetch


def _md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def serve(tmp_path, monkeypatch):
    """A local HTTP server over tmp_path/served (file:// responses lack the length torchvision reads)."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


@pytest.fixture
def cifar_archive(tmp_path, monkeypatch, serve):
    """A tiny CIFAR-10 archive in the real layout, and torchvision's CIFAR10 pointed at it with matching MD5s."""
    source = demo.write_cifar10(tmp_path / "src", per_batch=20, n_test=20, n_unlabeled=2)
    batches = source / "cifar-10-batches-py"
    root, base_url = serve
    archive = root / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(batches, arcname="cifar-10-batches-py")
    cls = torchvision.datasets.CIFAR10
    monkeypatch.setattr(cls, "url", base_url + archive.name)
    monkeypatch.setattr(cls, "tgz_md5", _md5(archive))
    monkeypatch.setattr(cls, "train_list", [[n, _md5(batches / n)] for n, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[n, _md5(batches / n)] for n, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": _md5(batches / "batches.meta")})
    return archive


def test_cifar10_is_downloaded_through_torchvision_into_the_readme_layout(cifar_archive, tmp_path):
    message = fetch.fetch_cifar10(tmp_path / "data" / "cifar10")
    layout = tmp_path / "data" / "cifar10" / "cifar-10-batches-py"
    assert (layout / "data_batch_5").is_file() and (layout / "test_batch").is_file()
    assert not (tmp_path / "data" / "cifar10" / "cifar-10-python.tar.gz").exists(), "the archive should be removed"
    assert "100 training and 20 test images, 10 classes" in message
    assert "100 training" in fetch.fetch_cifar10(tmp_path / "data" / "cifar10")  # present: verified, not fetched


def test_a_corrupt_cifar_download_is_refused(cifar_archive, tmp_path, monkeypatch):
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "tgz_md5", "0" * 32)
    with pytest.raises(fetch.FetchError, match="CIFAR-10: cannot download.*cifar-10-batches-py"):
        fetch.fetch_cifar10(tmp_path / "cifar10")


def _tiny_weights(tmp_path, serve):
    """A weight set named like torchvision's (name-<sha256 prefix>.pth) behind a local URL."""
    root, base_url = serve
    state = torch.nn.Linear(3, 2).state_dict()
    raw = tmp_path / "raw.pth"
    torch.save(state, raw)
    source = root / f"tiny-{hashlib.sha256(raw.read_bytes()).hexdigest()[:8]}.pth"
    raw.rename(source)

    class TinyWeights(WeightsEnum):
        V1 = Weights(url=base_url + source.name, transforms=None, meta={})
    return TinyWeights.V1, source


def test_weights_are_downloaded_into_torch_hub_and_a_damaged_copy_is_replaced(tmp_path, monkeypatch, serve):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    weights, source = _tiny_weights(tmp_path, serve)
    build = lambda: torch.nn.Linear(3, 2)  # noqa: E731
    assert "verified" in fetch.fetch_weights(weights, build)
    cached = tmp_path / "hub" / "checkpoints" / source.name
    assert cached.read_bytes() == source.read_bytes()
    cached.write_bytes(b"damaged")
    fetch.fetch_weights(weights, build)
    assert cached.read_bytes() == source.read_bytes()


def test_offline_fetch_fails_in_seconds_with_guidance_and_no_traceback(tmp_path, monkeypatch, capsys):
    def no_network(*args, **kwargs):
        raise socket.gaierror(-3, "Temporary failure in name resolution")
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    started = time.perf_counter()
    code = fetch.main(["--data", str(tmp_path / "cifar10")])
    out = capsys.readouterr().out
    assert code == 1 and time.perf_counter() - started < 10
    assert "CIFAR-10: cannot download" in out and "cifar-10-batches-py/ holds data_batch_1..5" in out
    assert "weights: cannot download" in out and "torch.hub.get_dir()/checkpoints/" in out
    assert 'profile = "demo"' in out and "Traceback" not in out
    assert "imagenet-mini (notebook 01): no public download" in out and "hw1 (notebook 02): no public download" in out
