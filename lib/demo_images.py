"""The demo data's images: each class a distinct (shape, colour, background texture) look, each image drawn with a
random position, scale, rotation, brightness and pixel noise, so a small CNN learns the classes quickly but cannot
just memorise pixels."""
import numpy as np

SHAPES = ("disc", "square", "triangle", "cross", "ring", "diamond", "star")
# The first ten colours are far apart, so the ten CIFAR classes differ in colour alone.
PALETTE = np.array([
    (220, 40, 40), (40, 170, 60), (40, 80, 220), (240, 210, 40),
    (220, 50, 200), (40, 200, 210), (245, 130, 30), (120, 50, 170),
    (160, 230, 60), (140, 80, 30), (250, 160, 190)], dtype=np.float32)
TEXTURES = ("plain", "stripes", "checker", "dots", "grid")
# 7, 11 and 5 are pairwise coprime: by the Chinese remainder theorem the first
# 7 * 11 * 5 class indices all get different (shape, colour, texture) triples.
MAX_CLASSES = len(SHAPES) * len(PALETTE) * len(TEXTURES)

NOISE_SIGMA = 10.0
TEXTURE_AMPLITUDE = 30.0


def class_style(index):
    """Return the deterministic look (shape, colour, texture, angle, period) of class ``index``."""
    # Wrapping keeps any MAX_CLASSES consecutive indices distinct, whatever the offset.
    index %= MAX_CLASSES
    return {"shape": SHAPES[index % len(SHAPES)],
            "colour": index % len(PALETTE),
            "texture": TEXTURES[index % len(TEXTURES)],
            # Orientation and frequency vary too, so same-texture classes still differ.
            "angle": 45.0 * ((index // len(TEXTURES)) % 4),
            "period": (0.16, 0.26)[(index // 20) % 2]}


def shape_mask(shape, u, v):
    """Boolean mask of a unit-radius ``shape`` on centred coordinates ``u`` (right), ``v`` (up)."""
    r2 = u * u + v * v
    if shape == "disc":
        return r2 <= 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.8
    if shape == "triangle":
        s3 = np.sqrt(3.0)
        return (v >= -0.6) & (s3 * u + v <= 1.1) & (-s3 * u + v <= 1.1)
    if shape == "cross":
        return (((np.abs(u) <= 0.3) & (np.abs(v) <= 0.95))
                | ((np.abs(v) <= 0.3) & (np.abs(u) <= 0.95)))
    if shape == "ring":
        return (r2 <= 1.0) & (r2 >= 0.55 ** 2)
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1.0
    if shape == "star":
        return np.sqrt(r2) <= 0.6 + 0.4 * np.cos(5 * np.arctan2(u, v))
    raise ValueError(f"unknown shape {shape!r}")


def texture_pattern(texture, x, y, phase):
    """Background pattern in {-1, 0, 1} on coordinates measured in texture periods."""
    if texture == "plain":
        return np.zeros_like(x)
    fx, fy = (x + phase[0]) % 1.0, (y + phase[1]) % 1.0
    if texture == "stripes":
        on = fx < 0.5
    elif texture == "checker":
        on = (fx < 0.5) ^ (fy < 0.5)
    elif texture == "dots":
        on = (fx - 0.5) ** 2 + (fy - 0.5) ** 2 < 0.25 ** 2
    elif texture == "grid":
        on = (fx < 0.25) | (fy < 0.25)
    else:
        raise ValueError(f"unknown texture {texture!r}")
    return np.where(on, 1.0, -1.0).astype(np.float32)


def render_image(style, size, rng):
    """Render one noisy RGB image (uint8, HWC) of the class described by ``style``."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    # Background: grey at a random brightness and faint tint, textured at a random phase
    # so that only the texture's kind, orientation and frequency carry class information.
    a = np.deg2rad(style["angle"] + rng.uniform(-5.0, 5.0))
    period = style["period"] * size
    xr = (x * np.cos(a) + y * np.sin(a)) / period
    yr = (-x * np.sin(a) + y * np.cos(a)) / period
    pattern = texture_pattern(style["texture"], xr, yr, rng.uniform(0.0, 1.0, 2))
    level = rng.uniform(50.0, 200.0) + rng.uniform(-10.0, 10.0, 3).astype(np.float32)
    img = level + TEXTURE_AMPLITUDE * pattern[..., None]
    # Foreground: random scale and position (fully inside the frame), slight rotation.
    radius = 0.5 * rng.uniform(0.35, 0.7) * size
    cx, cy = rng.uniform(radius, size - radius, 2)
    t = np.deg2rad(rng.uniform(-15.0, 15.0))
    dx, dy = (x - cx) / radius, (cy - y) / radius
    u = dx * np.cos(t) + dy * np.sin(t)
    v = -dx * np.sin(t) + dy * np.cos(t)
    colour = (PALETTE[style["colour"]] * rng.uniform(0.8, 1.1)
              + rng.uniform(-12.0, 12.0, 3)).astype(np.float32)
    img = np.where(shape_mask(style["shape"], u, v)[..., None], colour, img)
    img = img + NOISE_SIGMA * rng.standard_normal(img.shape, dtype=np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def render_batch(labels, styles, size, rng, pbar=None):
    """Render one image per label into a uint8 array of shape (N, size, size, 3)."""
    out = np.empty((len(labels), size, size, 3), dtype=np.uint8)
    for i, label in enumerate(labels):
        out[i] = render_image(styles[label], size, rng)
        if pbar is not None:
            pbar.update(1)
    return out


def class_styles(n_classes, offset):
    """Looks of ``n_classes`` classes, all distinct combinations."""
    if not 1 <= n_classes <= MAX_CLASSES:
        raise ValueError(f"n_classes must be in 1..{MAX_CLASSES}, got {n_classes}")
    return [class_style(offset + c) for c in range(n_classes)]
