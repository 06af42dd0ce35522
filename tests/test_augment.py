"""lib.augment: the batch augmentations draw from torchvision's distributions and keep their meaning."""
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torchvision import transforms

from lib import augment, folders


def test_crop_flip_is_a_shifted_window_of_the_padded_image():
    image = torch.arange(3 * 8 * 8, dtype=torch.float32).view(1, 3, 8, 8).repeat(200, 1, 1, 1)
    out = augment.random_crop_flip(image, 2, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(image[:1], (2,) * 4)
    windows = {(dy, dx, f) for dy in range(5) for dx in range(5) for f in (0, 1)}
    seen = set()
    for o in out:
        for dy, dx, f in windows:
            w = padded[0, :, dy:dy + 8, dx:dx + 8]
            if torch.equal(o, w.flip(2) if f else w):
                seen.add((dy, dx, f))
                break
        else:
            raise AssertionError("a crop is not a window of the padded image")
    assert len(seen) > 20 and {f for *_, f in seen} == {0, 1}


def _reference_boxes(height, width, n, scale, ratio=(3 / 4, 4 / 3)):
    torch.manual_seed(0)
    image = Image.new("RGB", (width, height))
    return torch.tensor([transforms.RandomResizedCrop.get_params(image, list(scale), list(ratio))
                         for _ in range(n)], dtype=torch.float64)


@pytest.mark.parametrize("scale", [(0.08, 1.0), (0.8, 1.0)])
def test_crop_boxes_follow_random_resized_crop(scale):
    height, width, n = 375, 500, 4000
    ours = torch.stack(augment.random_resized_crop_boxes(torch.full((n,), height), torch.full((n,), width), scale,
                                                          generator=torch.Generator().manual_seed(1)), 1).double()
    reference = _reference_boxes(height, width, n, scale)
    for boxes in (ours, reference):
        top, left, h, w = boxes.T
        assert (top >= 0).all() and (left >= 0).all() and (top + h <= height).all() and (left + w <= width).all()
    stats = {}
    for name, (top, left, h, w) in (("ours", ours.T), ("reference", reference.T)):
        area = h * w / (height * width)
        offset_y = torch.where(h < height, top / (height - h).clamp(min=1), torch.full_like(top, 0.5))
        offset_x = torch.where(w < width, left / (width - w).clamp(min=1), torch.full_like(left, 0.5))
        stats[name] = torch.stack([area.quantile(q) for q in (0.1, 0.5, 0.9)] +
                                  [(w / h).log().mean(), offset_y.mean(), offset_x.mean(), area.min(), area.max()])
    # quantiles of area, mean log aspect, mean relative offsets and the extremes agree within sampling noise
    assert torch.allclose(stats["ours"], stats["reference"], atol=0.03), stats
    assert stats["ours"][-2] >= scale[0] * 0.95 and stats["ours"][-1] <= 1.0


def test_crop_fallback_is_torchvisions():
    """An image no attempt fits gets torchvision's deterministic centred fallback."""
    for height, width in ((1, 1000), (1000, 1), (3, 5)):
        reference = transforms.RandomResizedCrop.get_params(Image.new("RGB", (width, height)), [0.9, 1.0],
                                                            [3 / 4, 4 / 3])
        ours = augment.random_resized_crop_boxes(torch.tensor([height]), torch.tensor([width]), (0.9, 1.0),
                                                 generator=torch.Generator().manual_seed(0))
        if (height, width) != (3, 5):  # (3, 5) can fit by chance; the others never can
            assert tuple(int(t) for t in ours) == tuple(reference)


def test_flip_jitter_and_affine_parameters_are_in_the_references_ranges():
    n, size = 4000, 224
    p = augment.sample_train_params(torch.full((n,), 375), torch.full((n,), 500), torch.Generator().manual_seed(2),
                                    out_size=size, jitter=0.2, degrees=10, translate=0.1)
    assert abs(p["flip"].float().mean().item() - 0.5) < 0.03
    for key in ("brightness", "contrast", "saturation"):
        assert p[key].min() >= 0.8 and p[key].max() <= 1.2 and abs(p[key].mean().item() - 1) < 0.01
    assert (p["order"].sort(1).values == torch.arange(3)).all()
    assert len({tuple(o) for o in p["order"].tolist()}) == 6  # every order of the three adjustments occurs
    assert p["angle"].abs().max() <= 10 and p["angle"].abs().max() > 9.5
    max_shift = round(0.1 * size)
    for key in ("tx", "ty"):
        assert (p[key] == p[key].round()).all() and p[key].abs().max() == max_shift


def test_flip_affine_identity_flip_rotation_and_shift():
    x = torch.arange(1, 2 * 3 * 6 * 6 + 1, dtype=torch.float32).view(2, 3, 6, 6)
    zero, no = torch.zeros(2), torch.zeros(2, dtype=torch.bool)
    assert torch.equal(augment.flip_affine(x, no, zero, zero, zero), x)
    flipped = augment.flip_affine(x, torch.tensor([True, False]), zero, zero, zero)
    assert torch.equal(flipped[0], x[0].flip(-1)) and torch.equal(flipped[1], x[1])
    quarter = augment.flip_affine(x, no, torch.full((2,), 90.0), zero, zero)
    assert any(torch.equal(quarter, torch.rot90(x, k, (2, 3))) for k in (1, 3))
    shifted = augment.flip_affine(x, no, zero, torch.full((2,), 2.0), torch.tensor([0.0, -1.0]))
    assert torch.equal(shifted[0, :, :, 2:], x[0, :, :, :-2]) and (shifted[0, :, :, :2] == 0).all()
    assert torch.equal(shifted[1, :, :-1, 2:], x[1, :, 1:, :-2]) and (shifted[1, :, -1] == 0).all()
    # flip first, then shift: the flipped image moves right
    both = augment.flip_affine(x, torch.tensor([True, True]), zero, torch.full((2,), 2.0), zero)
    assert torch.equal(both[..., 2:], x.flip(-1)[..., :-2])


def test_flip_affine_agrees_with_torchs_affine_grid_and_grid_sample():
    """The gather index equals what F.affine_grid + F.grid_sample(nearest, zeros) sample, but at rounding ties."""
    n, h, w = 32, 40, 56
    generator = torch.Generator().manual_seed(4)
    x = torch.rand(n, 3, h, w, generator=generator)
    flip, angle = torch.rand(n, generator=generator) < 0.5, 20 * torch.rand(n, generator=generator) - 10
    tx, ty = torch.randint(-5, 6, (n,), generator=generator).float(), torch.randint(-4, 5, (n,), generator=generator)
    theta = angle * (torch.pi / 180)
    cos, sin, sign = torch.cos(theta), torch.sin(theta), 1 - 2 * flip.float()
    ox, oy = -(cos * tx + sin * ty) * (2 / w), -(-sin * tx + cos * ty) * (2 / h)
    matrix = torch.stack([torch.stack([sign * cos, sign * sin * h / w, sign * ox], 1),
                          torch.stack([-sin * w / h, cos, oy], 1)], 1)
    grid = torch.nn.functional.affine_grid(matrix, (n, 3, h, w), align_corners=False)
    reference = torch.nn.functional.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    ours = augment.flip_affine(x, flip, angle, tx, ty)
    assert (ours == reference).float().mean() > 0.999


def test_fused_batch_path_is_flip_affine_then_normalisation():
    """finish_train_batch moves RGBX words through the same index; with the jitter at identity it equals
    flip_affine of the image followed by normalisation, the fill included."""
    generator = torch.Generator().manual_seed(5)
    rgb = torch.randint(0, 256, (4, 10, 10, 3), dtype=torch.uint8, generator=generator)
    resized = torch.cat([rgb, torch.full((4, 10, 10, 1), 255, dtype=torch.uint8)], 3)
    ones = torch.ones(4)
    params = {"flip": torch.tensor([True, False, True, False]), "angle": torch.tensor([7.0, -9.0, 0.0, 3.0]),
              "tx": torch.tensor([3.0, -1.0, 0.0, 2.0]), "ty": torch.tensor([-2.0, 1.0, 0.0, 0.0]),
              "brightness": ones, "contrast": ones, "saturation": ones, "order": torch.tensor([[0, 1, 2]] * 4)}
    out = torch.empty(4, 3, 10, 10)
    augment.finish_train_batch(resized, params, folders.IMAGENET_MEAN, folders.IMAGENET_STD, out, {})
    moved = augment.flip_affine(rgb.permute(0, 3, 1, 2).float() / 255, params["flip"], params["angle"],
                                params["tx"], params["ty"])
    expected = augment.normalize(moved, folders.IMAGENET_MEAN, folders.IMAGENET_STD, max_value=1)
    assert torch.allclose(out, expected, atol=1e-5)
    assert (moved == 0).all(1).any()  # the rotation did bring in fill


@pytest.mark.parametrize("order", [[0, 1, 2], [2, 1, 0], [1, 2, 0]])
def test_color_jitter_equals_torchvisions_adjustments(order):
    """The batch path's colour matrix (no flip, rotation or shift here) against torchvision's three adjustments in
    the drawn order, then normalisation."""
    generator = torch.Generator().manual_seed(3)
    images = 0.3 + 0.25 * torch.rand(4, 3, 8, 8, generator=generator)  # no step saturates, so no clamp differs
    factors = 0.8 + 0.4 * torch.rand(4, 3, generator=generator)
    zeros = torch.zeros(4)
    params = {"brightness": factors[:, 0], "contrast": factors[:, 1], "saturation": factors[:, 2],
              "order": torch.tensor([order] * 4), "flip": zeros.bool(), "angle": zeros, "tx": zeros, "ty": zeros}
    rgb = (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    resized = torch.cat([rgb, torch.full((4, 8, 8, 1), 255, dtype=torch.uint8)], 3).contiguous()
    ours = augment.finish_train_batch(resized, params, folders.IMAGENET_MEAN, folders.IMAGENET_STD,
                                      torch.empty(4, 3, 8, 8))
    images = (images * 255).round() / 255
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)
    for k in range(4):
        expected = images[k]
        for op in order:
            expected = ops[op](expected, float(factors[k, op]))
        expected = augment.normalize(expected[None], folders.IMAGENET_MEAN, folders.IMAGENET_STD, max_value=1)[0]
        assert torch.allclose(ours[k], expected, atol=1e-4)
