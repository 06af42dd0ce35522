"""Batch augmentations with tensor ops: torchvision's per-image train transforms, redone for whole batches.

RandomResizedCrop, RandomHorizontalFlip, ColorJitter(brightness, contrast, saturation) and RandomAffine(rotation,
translation) draw their parameters here exactly as torchvision does (same distributions, same integer rounding),
but for many images at once from one CPU generator; the pixel work is then a few batched tensor ops on any device.
Drawing a whole epoch's parameters up front makes each batch a pure function of (seed, epoch, batch index).
"""
import math

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

    `out` may be `images` itself (float) for an in-place update.
    """
    device = images.device
    scale = (1 / (max_value * torch.tensor(std, device=device, dtype=torch.float32))).view(1, -1, 1, 1)
    shift = (-torch.tensor(mean, device=device, dtype=torch.float32) * max_value * scale.view(-1)).view(1, -1, 1, 1)
    if out is None:
        out = torch.empty(images.shape, device=device, dtype=torch.float32)
    if out is not images:
        out.copy_(images)  # copy_ converts uint8 on a vectorised path; arithmetic with type promotion does not
    return out.mul_(scale).add_(shift)


def color_jitter(images, params, std=(1.0, 1.0, 1.0), buffers=None):
    """ColorJitter with per-image `params` on uint8-valued N x 3 x H x W (uint8, or float 0..255), scaled by std.

    Returns the jittered colour in [0, 1] divided by `std` per channel, i.e. the normalised image minus the
    normalised black: black (the affine's fill) stays 0, and adding -mean/std finishes the normalisation. The colour
    matrix and all scalings make one batched matrix product, then one clamp. `buffers`: a dict for reusable scratch
    tensors; the result lives in it.
    """
    n, c, h, w = images.shape
    device = images.device
    x = scratch(buffers, "jitter_in", (n, c, h * w), torch.float32, device)
    x.view(n, c, h, w).copy_(images)
    p = {k: params[k].to(device) for k in ("brightness", "contrast", "saturation", "order")}
    matrix, offset = color_jitter_matrices(x.mean(2), p["brightness"], p["contrast"], p["saturation"], p["order"])
    scale = 1 / (255 * torch.tensor(std, device=device, dtype=torch.float32))
    result = scratch(buffers, "jitter_out", (n, c, h * w), torch.float32, device)
    torch.baddbmm((offset * scale)[:, :, None], matrix * scale[None, :, None], x, out=result)
    for channel, s in enumerate(std):
        result[:, channel].clamp_(0, 1 / s)
    return result.view(n, c, h, w)


def flip_affine(images, flip, angle, tx, ty, buffers=None, out=None):
    """Horizontal flip, then rotation about the centre by `angle` degrees and translation by (tx, ty) pixels.

    Nearest-neighbour sampling with 0 (black) where the source falls outside the image: RandomHorizontalFlip
    followed by RandomAffine(degrees, translate) with its default interpolation and fill. The flip and the affine
    map compose into one matrix per image, so the batch is resampled once (affine_grid + grid_sample), into `out`
    when given.
    """
    n, c, h, w = images.shape
    device = images.device
    theta = angle.to(device, torch.float32) * (math.pi / 180)
    cos, sin = torch.cos(theta), torch.sin(theta)
    tx, ty = tx.to(device, torch.float32), ty.to(device, torch.float32)
    # source = R(-angle) (p - t) in pixels from the centre; normalised coordinates scale x by w/2 and y by h/2
    a, b, cc, d = cos, sin * (h / w), -sin * (w / h), cos
    ox = -(cos * tx + sin * ty) * (2 / w)
    oy = -(-sin * tx + cos * ty) * (2 / h)
    sign = 1 - 2 * flip.to(device, torch.float32)  # flipping the source negates its x coordinate
    matrix = torch.stack([torch.stack([sign * a, sign * b, sign * ox], 1), torch.stack([cc, d, oy], 1)], 1)
    grid = affine_grid(matrix, h, w, out=scratch(buffers, "grid", (n, h, w, 2), torch.float32, device))
    if out is not None and device.type == "cpu":
        # F.grid_sample's op (interpolation 1 = nearest, padding 0 = zeros) writing into `out`
        return torch.ops.aten.grid_sampler_2d.out(images.contiguous(), grid, 1, 0, False, out=out)
    result = F.grid_sample(images, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return result if out is None else out.copy_(result)


def affine_grid(matrix, h, w, out=None):
    """F.affine_grid(matrix, (n, c, h, w), align_corners=False), built from two broadcast sums (it is separable)
    instead of a batched matmul with an inner size of 3, which is slow on CPUs."""
    n = len(matrix)
    u = (torch.arange(w, device=matrix.device, dtype=matrix.dtype) * 2 + 1) / w - 1
    v = (torch.arange(h, device=matrix.device, dtype=matrix.dtype) * 2 + 1) / h - 1
    grid = torch.empty(n, h, w, 2, device=matrix.device, dtype=matrix.dtype) if out is None else out
    for k in range(2):
        along_x = matrix[:, k, 0, None, None] * u[None, None, :]
        along_y = matrix[:, k, 1, None, None] * v[None, :, None] + matrix[:, k, 2, None, None]
        torch.add(along_x, along_y, out=grid[..., k])
    return grid


def resized_crop(image_hwc, top, left, height, width, size):
    """Crop an H x W x 3 image (uint8 on the CPU, any dtype elsewhere) and resize it to size x size, antialiased.

    Bilinear with antialiasing, as RandomResizedCrop on a PIL image does; uint8 on the CPU takes torch's fast
    vectorised path, other devices work in float.
    """
    crop = image_hwc[top:top + height, left:left + width].permute(2, 0, 1)[None]
    if crop.device.type != "cpu":
        crop = crop.float()
    return F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]


def canvas_boxes(params, heights, widths, canvas_size):
    """Map crop boxes drawn on the original images into a canvas_size x canvas_size stored copy (integer bounds)."""
    sy = canvas_size / heights.to(torch.float64)
    sx = canvas_size / widths.to(torch.float64)
    y0 = torch.round(params["top"] * sy).long().clamp(0, canvas_size - 1)
    x0 = torch.round(params["left"] * sx).long().clamp(0, canvas_size - 1)
    y1 = torch.maximum(torch.round((params["top"] + params["height"]) * sy).long(), y0 + 1).clamp(max=canvas_size)
    x1 = torch.maximum(torch.round((params["left"] + params["width"]) * sx).long(), x0 + 1).clamp(max=canvas_size)
    return y0, x0, y1 - y0, x1 - x0
