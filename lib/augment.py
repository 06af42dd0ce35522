"""Batch augmentations with tensor ops: torchvision's per-image train transforms, redone for whole batches.

RandomResizedCrop, RandomHorizontalFlip, ColorJitter(brightness, contrast, saturation) and RandomAffine(rotation,
translation) draw their parameters here exactly as torchvision does (same distributions, same integer rounding),
but for many images at once from one CPU generator; the pixel work is then a few batched tensor ops on any device.
Pixels travel as 32-bit RGBX words, so the flip, rotation and shift together are one gather per image.
Drawing a whole epoch's parameters up front makes each batch a pure function of (seed, epoch, batch index).
CIFAR's padded random crop and flip (`random_crop_flip`) and the normalisation every loader ends with live here too.
"""
import math

import numpy as np
import torch
import torch.nn.functional as F

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale (ITU-R 601-2 luma)


def _uniform(low, high, shape, generator):
    """Uniform floats in [low, high) as float64 (the parameters are drawn in double, as torchvision's .item() does)."""
    return low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float64)


def random_resized_crop_boxes(heights, widths, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), generator=None, attempts=10):
    """RandomResizedCrop.get_params for many images: (top, left, height, width) int64 tensors in pixel units.

    Area fraction uniform in `scale`, log aspect ratio uniform in `ratio`, 10 attempts to fit, then the centred
    fallback clamped to the ratio range: the same procedure as torchvision's, vectorised over images.
    """
    heights = torch.as_tensor(heights, dtype=torch.float64)
    widths = torch.as_tensor(widths, dtype=torch.float64)
    n = len(heights)
    target_area = (heights * widths)[:, None] * _uniform(scale[0], scale[1], (n, attempts), generator)
    aspect = torch.exp(_uniform(math.log(ratio[0]), math.log(ratio[1]), (n, attempts), generator))
    w = torch.round(torch.sqrt(target_area * aspect))
    h = torch.round(torch.sqrt(target_area / aspect))
    fits = (w > 0) & (w <= widths[:, None]) & (h > 0) & (h <= heights[:, None])
    first = fits.to(torch.uint8).argmax(1, keepdim=True)  # the first attempt that fits, as torchvision's loop takes
    found = fits.any(1)
    w, h = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0]
    in_ratio = widths / heights
    fallback_w = torch.where(in_ratio > ratio[1], torch.round(heights * ratio[1]), widths)
    fallback_h = torch.where(in_ratio < ratio[0], torch.round(widths / ratio[0]), heights)
    w, h = torch.where(found, w, fallback_w), torch.where(found, h, fallback_h)
    u = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    top = torch.where(found, torch.floor(u[:, 0] * (heights - h + 1)), torch.floor((heights - h) / 2))
    left = torch.where(found, torch.floor(u[:, 1] * (widths - w + 1)), torch.floor((widths - w) / 2))
    return top.long(), left.long(), h.long(), w.long()


def sample_train_params(heights, widths, generator, *, out_size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                        jitter=0.2, degrees=10.0, translate=0.1):
    """Draw every random choice of the train transform for a list of images (original heights, widths).

    Returns a dict of per-image tensors: crop box (top, left, height, width), flip, jitter factors (brightness,
    contrast, saturation) and their order, rotation angle in degrees, integer translation (tx, ty) in output pixels.
    """
    n = len(heights)
    top, left, height, width = random_resized_crop_boxes(heights, widths, scale, ratio, generator)
    factors = _uniform(max(0.0, 1 - jitter), 1 + jitter, (n, 3), generator).float()
    max_shift = translate * out_size
    return {
        "top": top, "left": left, "height": height, "width": width,
        "flip": torch.rand(n, generator=generator) < 0.5,
        "brightness": factors[:, 0], "contrast": factors[:, 1], "saturation": factors[:, 2],
        # ColorJitter applies its operations in a random order; argsort of uniforms is a uniform permutation
        "order": torch.rand(n, 3, generator=generator).argsort(1),
        "angle": _uniform(-degrees, degrees, n, generator).float(),
        "tx": torch.round(_uniform(-max_shift, max_shift, n, generator)).float(),
        "ty": torch.round(_uniform(-max_shift, max_shift, n, generator)).float(),
    }


def color_jitter_matrices(mean_rgb, brightness, contrast, saturation, order):
    """Per-image 3x3 matrix M and offset t with M @ rgb + t = ColorJitter's three adjustments in the given order.

    Brightness scales, saturation blends with the pixel's grey, contrast blends with the image's mean grey: all
    affine in the colour, so they compose into one matrix. `mean_rgb` (N x 3) is the image's mean colour, carried
    through the steps so contrast sees the mean of the image as it is at that point. torchvision clamps to [0, 1]
    after each step; here one clamp follows the composition (they differ only where a step saturated).
    """
    n = len(mean_rgb)
    gray = torch.tensor(GRAY_WEIGHTS, device=mean_rgb.device, dtype=mean_rgb.dtype)
    eye = torch.eye(3, device=mean_rgb.device, dtype=mean_rgb.dtype)
    matrix, offset = eye.expand(n, 3, 3).clone(), torch.zeros_like(mean_rgb)
    b, c, s = (f.to(mean_rgb)[:, None] for f in (brightness, contrast, saturation))
    to_gray = gray.expand(3, 3)  # every row holds the grey weights: rgb -> (g, g, g)
    order = order.to(mean_rgb.device)
    for step in range(3):
        op = order[:, step][:, None]
        mean_gray = ((matrix @ mean_rgb[:, :, None])[:, :, 0] + offset) @ gray
        sat = s[:, :, None] * eye + (1 - s[:, :, None]) * to_gray
        candidates = (
            (b[:, :, None] * matrix, b * offset),
            (c[:, :, None] * matrix, c * offset + (1 - c) * mean_gray[:, None]),
            (sat @ matrix, (sat @ offset[:, :, None])[:, :, 0]),
        )
        matrix = torch.where((op == 0)[:, :, None], candidates[0][0],
                             torch.where((op == 1)[:, :, None], candidates[1][0], candidates[2][0]))
        offset = torch.where(op == 0, candidates[0][1], torch.where(op == 1, candidates[1][1], candidates[2][1]))
    return matrix, offset


def scratch(buffers, name, shape, dtype=torch.float32, device="cpu"):
    """A reusable scratch tensor kept in the dict `buffers` (or a fresh one if buffers is None).

    On the CPU a fresh tensor of tens of MB comes from the kernel page by page (a fault per 4 KiB); keeping
    the batch-sized intermediates between batches removes that cost. Capacity grows to the largest batch seen.
    """
    if buffers is None:
        return torch.empty(shape, dtype=dtype, device=device)
    held = buffers.get(name)
    if (held is None or held.dtype != dtype or held.device != torch.device(device) or held.shape[1:] != shape[1:]
            or held.shape[0] < shape[0]):
        held = buffers[name] = torch.empty(shape, dtype=dtype, device=device)
    return held[:shape[0]]


def normalize(images, mean, std, out=None, max_value=255):
    """N x C x H x W (any layout) with values 0..max_value to normalised float32 (x / max_value - mean) / std.

    `out` may be `images` itself (float) for an in-place update. mean and std may be tensors already on the images'
    device (a loader keeps them there): built from Python numbers, they would cost a host-to-device copy per call.
    """
    device = images.device
    std = torch.as_tensor(std, device=device, dtype=torch.float32)
    scale = (1 / (max_value * std)).view(1, -1, 1, 1)
    shift = (-torch.as_tensor(mean, device=device, dtype=torch.float32) * max_value * scale.view(-1)).view(1, -1, 1, 1)
    if out is None:
        out = torch.empty(images.shape, device=device, dtype=torch.float32)
    if out is not images:
        out.copy_(images)  # copy_ converts uint8 on a vectorised path; arithmetic with type promotion does not
    return out.mul_(scale).add_(shift)


def draw_crop_flip(n, padding, generator, flip=True):
    """The random choices of `crop_flip` for n images, drawn on the CPU: (row offsets, column offsets, flips)."""
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    flips = torch.rand(n, generator=generator) < (0.5 if flip else 0.0)
    return dy, dx, flips


def crop_flip(images, padding, dy, dx, flips):
    """Crop with zero padding at offsets (dy, dx) and mirror the images where `flips` is set, on the images' device.

    One gather from the padded batch: each output pixel reads (row + dy, col + dx) of its padded image, with the
    columns reversed for flipped images. The offsets must already be on that device (no copy per batch).
    """
    n, c, h, w = images.shape
    padded = torch.nn.functional.pad(images, (padding,) * 4)
    device = images.device
    cols = torch.arange(w, device=device).expand(n, w)
    cols = torch.where(flips[:, None], cols.flip(1), cols) + dx[:, None]
    rows = dy[:, None] + torch.arange(h, device=device)
    index = (rows[:, :, None] * (w + 2 * padding) + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
    return padded.view(n, c, -1).gather(2, index).view(n, c, h, w)


def random_crop_flip(images, padding, generator, flip=True):
    """Random crop with zero padding plus (optionally) random horizontal flip, per image, on a whole batch."""
    choices = draw_crop_flip(len(images), padding, generator, flip)
    return crop_flip(images, padding, *(t.to(images.device) for t in choices))


def affine_source_index(flip, angle, tx, ty, height, width, buffers=None):
    """Nearest source pixel of every output pixel of a horizontal flip followed by RandomAffine (rotation about the
    centre by `angle` degrees, then a shift by (tx, ty) pixels), as N x H*W int32 flat indices into the image
    padded by one black pixel on each side ((H + 2) x (W + 2)).

    Sources outside the image are clamped into that padding, so they read black: RandomAffine's fill. Coordinates
    are rounded half to even, as grid_sample's nearest mode rounds them. The map is affine, so each coordinate is
    one broadcast sum of a per-column and a per-row term.
    """
    device = angle.device
    n = len(angle)
    theta = angle.to(torch.float32) * (math.pi / 180)
    cos, sin = torch.cos(theta), torch.sin(theta)
    sign = 1 - 2 * flip.to(device, torch.float32)  # the flip mirrors the source's x about the centre
    cx, cy = (width - 1) / 2, (height - 1) / 2
    dx = torch.arange(width, device=device, dtype=torch.float32)[None] - cx - tx.to(device, torch.float32)[:, None]
    dy = torch.arange(height, device=device, dtype=torch.float32)[None] - cy - ty.to(device, torch.float32)[:, None]
    # source = centre + R(-angle) (p - centre - t), x mirrored when flipped
    xs = scratch(buffers, "index_x", (n, height, width), torch.float32, device)
    ys = scratch(buffers, "index_y", (n, height, width), torch.float32, device)
    torch.add((sign * cos)[:, None, None] * dx[:, None, :], ((sign * sin)[:, None] * dy + cx)[:, :, None], out=xs)
    torch.add(-sin[:, None, None] * dx[:, None, :], (cos[:, None] * dy + cy)[:, :, None], out=ys)
    xs.round_().clamp_(-1, width)
    ys.round_().clamp_(-1, height)
    torch.add(xs, ys, alpha=width + 2, out=xs).add_(width + 3)  # (y + 1) * (W + 2) + (x + 1), exact in float32
    index = scratch(buffers, "index", (n, height * width), torch.int32, device)
    return index.copy_(xs.view(n, -1))


def flip_affine(images, flip, angle, tx, ty):
    """Horizontal flip, then RandomAffine's rotation and shift with nearest sampling and black fill, for any
    N x C x H x W tensor: a gather through `affine_source_index`."""
    n, c, h, w = images.shape
    index = affine_source_index(flip, angle.to(images.device), tx, ty, h, w).long()
    padded = F.pad(images, (1, 1, 1, 1)).reshape(n, c, -1)
    return torch.gather(padded, 2, index[:, None].expand(n, c, h * w)).view(n, c, h, w)


def resize_into(window_hwc, out_hwc):
    """Resize an h x w x 4 uint8 window into `out_hwc` (S x S x 4 uint8), bilinear with antialiasing, as PIL's
    resize in RandomResizedCrop; the result is rounded to uint8, as PIL's is.

    On the CPU torch's vectorised uint8 kernel writes straight into `out_hwc` (channels-last, no copy); on other
    devices the resize runs in float.
    """
    size = list(out_hwc.shape[:2])
    source = window_hwc.permute(2, 0, 1)[None]
    if source.device.type == "cpu" and source.dtype == torch.uint8:
        torch.ops.aten._upsample_bilinear2d_aa.out(source, size, False, None, None, out=out_hwc.permute(2, 0, 1)[None])
        return out_hwc
    resized = F.interpolate(source.float(), size=size, mode="bilinear", antialias=True, align_corners=False)
    return out_hwc.copy_(resized[0].permute(1, 2, 0).round_().clamp_(0, 255))


OPAQUE = torch.tensor([0, 0, 0, 255], dtype=torch.uint8).view(torch.int32).item()  # RGBX word with X = 255


def finish_train_batch(resized, params, mean, std, out, buffers=None):
    """The rest of the training transform for resized crops N x S x S x 4 (uint8 RGBX): flip, colour jitter,
    RandomAffine and normalisation, written into `out` (N x 3 x S x S float32, contiguous or channels_last).

    Each pixel is one 32-bit word, so the flip and the affine are a single gather of words from the crops padded
    with transparent black. The colour matrix acts on (R, G, B, X) with ColorJitter's offset riding on X (255 for
    image pixels, 0 for the fill), so the fill stays black through the jitter; normalisation is folded into the same
    matrix product, and one clamp per channel keeps the colour in [0, 1] as ColorJitter does.
    """
    n, h, w, _ = resized.shape
    device = resized.device
    # ColorJitter's contrast uses the mean of the image before the affine moves it
    if device.type == "cpu":  # rows first, so the inner loop runs over contiguous bytes
        rows = resized.numpy().reshape(n, h, w * 4).sum(1, dtype=np.uint32)
        sums = torch.from_numpy(rows.reshape(n, w, 4).sum(1)[:, :3].astype(np.float32))
    else:
        sums = resized[..., :3].reshape(n, -1, 3).sum(1, dtype=torch.float32)
    matrix, offset = color_jitter_matrices(sums / (h * w), *(params[k].to(device) for k in
                                                              ("brightness", "contrast", "saturation", "order")))
    scale = torch.tensor([1 / (255 * s) for s in std], device=device)
    colour = torch.cat([matrix * scale[None, :, None], (offset * scale / 255)[:, :, None]], 2)  # N x 3 x 4
    black = [-m / s for m, s in zip(mean, std)]  # normalised 0; the fill's value and the clamp's lower bound

    padded = scratch(buffers, "padded", (n, h + 2, w + 2), torch.int32, device)
    for border in (padded[:, 0], padded[:, -1], padded[:, :, 0], padded[:, :, -1]):
        border.zero_()
    torch.bitwise_or(resized.view(torch.int32)[..., 0], OPAQUE, out=padded[:, 1:-1, 1:-1])
    index = affine_source_index(params["flip"], params["angle"].to(device), params["tx"], params["ty"], h, w,
                                buffers)
    if n > 1:  # one gather for the whole chunk: offset each image's indices to its own padded plane
        index += torch.arange(n, device=device, dtype=torch.int32)[:, None] * ((h + 2) * (w + 2))
    words = scratch(buffers, "words", (n, h * w), torch.int32, device)
    torch.index_select(padded.view(-1), 0, index.view(-1), out=words.view(-1))
    rgbx = words.view(torch.uint8).view(n, h * w, 4)
    bias = torch.tensor(black, device=device)
    # the product runs plane by plane (3 x 4 colour matrix times 4 x H*W pixels): as one pixel-major product with a
    # 4-wide inner and 3-wide outer dimension it took 6x longer (measured: bench.host_batch); a channels_last `out`
    # gets the planes by one transposing copy at the end
    planes = out if out.is_contiguous() else scratch(buffers, "planes", (n, 3, h, w), torch.float32, device)
    pixels = scratch(buffers, "pixels", (n, 4, h * w), torch.float32, device)
    pixels.copy_(rgbx.permute(0, 2, 1))
    torch.baddbmm(bias.view(1, 3, 1), colour, pixels, out=planes.view(n, 3, h * w))
    for channel, (low, s) in enumerate(zip(black, std)):
        planes[:, channel].clamp_(low, low + 1 / s)
    if planes is not out:
        out.copy_(planes)
    return out


def canvas_boxes(params, heights, widths, canvas_size):
    """Map crop boxes drawn on the original images into a canvas_size x canvas_size stored copy (integer bounds)."""
    sy = canvas_size / heights.to(torch.float64)
    sx = canvas_size / widths.to(torch.float64)
    y0 = torch.round(params["top"] * sy).long().clamp(0, canvas_size - 1)
    x0 = torch.round(params["left"] * sx).long().clamp(0, canvas_size - 1)
    y1 = torch.maximum(torch.round((params["top"] + params["height"]) * sy).long(), y0 + 1).clamp(max=canvas_size)
    x1 = torch.maximum(torch.round((params["left"] + params["width"]) * sx).long(), x0 + 1).clamp(max=canvas_size)
    return y0, x0, y1 - y0, x1 - x0
