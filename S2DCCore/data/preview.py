"""PNG montages of a volume (axial, coronal, sagittal) with an optional label overlay, using Pillow only.

Display convention: radiological. The volume is first flipped/permuted to the closest RAS axes (from its
affine; obliquity is ignored), then
  * axial: the patient's right on the image's left, anterior at the top, seen from the feet;
  * coronal: the patient's right on the image's left, superior at the top, seen from the front;
  * sagittal: anterior on the image's left, superior at the top, seen from the patient's left.
Edge letters (R/L, A/P, S/I) on each panel say so. Panels share one mm → pixel scale taken from the
affine's spacing, so anisotropic volumes keep their physical proportions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Fixed overlay colours by label value (value 0 is never drawn; values past the table wrap around).
COLOURS = (
    (0, 0, 0), (192, 104, 88), (241, 214, 145), (128, 174, 255), (63, 110, 230), (221, 130, 40),
    (157, 108, 162), (30, 200, 120), (160, 230, 40), (250, 250, 210), (230, 30, 50), (250, 160, 200),
    (200, 0, 100), (0, 220, 220), (255, 110, 0), (120, 80, 255), (0, 140, 80), (255, 230, 0), (140, 60, 20),
    (90, 90, 160), (255, 0, 255),
)
CT_WINDOW = (-160.0, 240.0)  # soft tissue: width 400, level 40


def colour(value: int) -> tuple[int, int, int]:
    """The overlay colour of a label value."""
    return COLOURS[1 + (int(value) - 1) % (len(COLOURS) - 1)]


def _to_ras(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flip/permute ``array`` to the closest RAS axes; return it and its spacing per new axis."""
    from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

    transform = ornt_transform(io_orientation(affine), axcodes2ornt("RAS"))
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    new_spacing = np.empty(3)
    new_spacing[transform[:, 0].astype(int)] = spacing
    return np.asarray(apply_orientation(array, transform)), new_spacing


def default_window(image: np.ndarray) -> tuple[float, float]:
    """Soft-tissue CT window when the image looks like HU (air near −1000), else the 1–99.5 percentiles."""
    low, high = np.percentile(image, [1.0, 99.5])
    if image.min() < -500 and high > 0:
        return CT_WINDOW
    return float(low), float(high) if high > low else float(low) + 1.0


def _slice_indices(label: np.ndarray | None, shape: tuple[int, ...]) -> list[int]:
    """Per axis, the slice showing the most distinct labels (ties: nearest the foreground's centre)."""
    if label is None or not np.any(label):
        return [n // 2 for n in shape]
    centre = np.argwhere(label > 0).mean(0)
    indices = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        counts = sum(np.any(label == v, axis=other).astype(int) for v in np.unique(label) if v != 0)
        best = np.flatnonzero(counts == counts.max())
        indices.append(int(best[np.argmin(np.abs(best - centre[axis]))]))
    return indices


def save_montage(
    png_path: str | Path,
    image: np.ndarray,
    label: np.ndarray | None = None,
    affine: np.ndarray | None = None,
    window: tuple[float, float] | None = None,
    label_names: dict[int, str] | None = None,
    *,
    panel_px: int = 256,
    alpha: float = 0.4,
) -> Path:
    """Write a three-panel PNG montage of ``image`` (and ``label``) and return its path.

    Args:
        png_path: the PNG to write (parent folders are created; an existing file is replaced).
        image: (X, Y, Z) array indexed [i, j, k].
        label: optional labelmap on the same grid, overlaid in the fixed `COLOURS`.
        affine: (4, 4) voxel → RAS; identity (1 mm, RAS) if omitted.
        window: (low, high) display range; default `default_window`.
        label_names: value → name for the legend; values without a name are shown as numbers.
        panel_px: the largest panel side in pixels.
        alpha: overlay opacity.

    The slices cross where the label shows the most structures (`_slice_indices`), or at the centre.
    """
    from PIL import Image, ImageDraw, ImageFont

    image = np.asarray(image, dtype=np.float32)
    affine = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
    volume, spacing = _to_ras(image, affine)
    labels = None if label is None else _to_ras(np.asarray(label), affine)[0]
    low, high = window if window is not None else default_window(volume)
    i, j, k = _slice_indices(labels, volume.shape)
    # (2-D array [row, col], mm per column, mm per row, title, left/right/top/bottom letters)
    views = [
        (lambda v: v[::-1, ::-1, k].T, spacing[0], spacing[1], f"axial k={k}", "RLAP"),
        (lambda v: v[::-1, j, ::-1].T, spacing[0], spacing[2], f"coronal j={j}", "RLSI"),
        (lambda v: v[i, ::-1, ::-1].T, spacing[1], spacing[2], f"sagittal i={i}", "APSI"),
    ]
    extent = max(max(n * s for n, s in zip(volume.shape, spacing)), 1e-6)
    scale = panel_px / extent  # pixels per mm, shared by all panels
    font = ImageFont.load_default()
    panels = []
    for take, col_mm, row_mm, title, letters in views:
        grey = np.clip((take(volume) - low) / max(high - low, 1e-6), 0.0, 1.0)
        size = (max(1, round(grey.shape[1] * col_mm * scale)), max(1, round(grey.shape[0] * row_mm * scale)))
        rgb = np.asarray(Image.fromarray((grey * 255).astype(np.uint8)).resize(size, Image.BILINEAR), np.float32)
        rgb = np.repeat(rgb[..., None], 3, axis=2)
        if labels is not None:
            lab = np.asarray(Image.fromarray(take(labels).astype(np.int32)).resize(size, Image.NEAREST))
            lut = np.array([colour(v) if v else (0, 0, 0) for v in range(int(lab.max()) + 1)], np.float32)
            mask = lab > 0
            rgb[mask] = (1 - alpha) * rgb[mask] + alpha * lut[lab[mask]]
        panel = Image.fromarray(rgb.astype(np.uint8))
        draw = ImageDraw.Draw(panel)
        w, h = panel.size
        for text, xy in zip(letters, ((2, h // 2 - 5), (w - 8, h // 2 - 5), (w // 2 - 3, 1), (w // 2 - 3, h - 11))):
            draw.text(xy, text, fill=(255, 255, 0), font=font)
        panels.append((panel, title))

    present = [] if labels is None else [int(v) for v in np.unique(labels) if v != 0]
    names = label_names or {}
    legend_rows = (len(present) + 3) // 4
    gap, title_h, row_h = 6, 14, 14
    width = sum(p.size[0] for p, _ in panels) + gap * (len(panels) + 1)
    height = title_h + max(p.size[1] for p, _ in panels) + gap * 2 + legend_rows * row_h
    canvas = Image.new("RGB", (width, height), (0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    x = gap
    for panel, title in panels:
        draw.text((x, 1), title, fill=(255, 255, 255), font=font)
        canvas.paste(panel, (x, title_h))
        x += panel.size[0] + gap
    top = title_h + max(p.size[1] for p, _ in panels) + gap
    column_w = (width - gap) // 4
    for n, value in enumerate(present):
        lx, ly = gap + (n % 4) * column_w, top + (n // 4) * row_h
        draw.rectangle((lx, ly + 1, lx + 10, ly + 11), fill=colour(value))
        draw.text((lx + 14, ly), f"{value} {names.get(value, '')}".strip(), fill=(255, 255, 255), font=font)
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(png_path, format="PNG")
    return png_path
