"""PNG previews of inference results over the image (``--preview`` of ``segment`` and ``embed``).

Labelmaps (segmentations, structures) use the project's montage (`S2DCCore.data.preview.save_montage`).
Colour overlays (PCA RGB, similarity) are blended by `save_rgb_montage` with the same display
convention: volume flipped/permuted to the closest RAS axes, radiological axial / coronal / sagittal
panels through the centre, one mm → pixel scale for all panels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

PANEL_PX = 256
RGB_ALPHA = 0.5


def save_label_preview(png_path: str | Path, image: np.ndarray, labels: np.ndarray, affine: np.ndarray,
                       label_names: dict[int, str] | None = None) -> Path:
    """Montage of ``labels`` over ``image`` (both (X, Y, Z) on the grid ``affine``)."""
    from S2DCCore.data.preview import save_montage

    return save_montage(png_path, image, labels, affine=affine, label_names=label_names)


def similarity_colours(similarity: np.ndarray) -> np.ndarray:
    """(X, Y, Z) similarity in [−1, 1] → (X, Y, Z, 3) uint8, blue (−1) through black (0) to yellow (+1)."""
    s = np.clip(np.asarray(similarity, dtype=np.float32), -1.0, 1.0)
    pos, neg = np.clip(s, 0, 1), np.clip(-s, 0, 1)
    rgb = np.stack([pos, pos * 0.85, neg], axis=-1)
    return np.round(rgb * 255).astype(np.uint8)


def save_rgb_montage(png_path: str | Path, image: np.ndarray, rgb: np.ndarray, affine: np.ndarray, *,
                     alpha: float = RGB_ALPHA, panel_px: int = PANEL_PX) -> Path:
    """Three-panel PNG of ``rgb`` (X, Y, Z, 3) uint8 blended over ``image`` (X, Y, Z) on the grid ``affine``."""
    from PIL import Image as PILImage

    from S2DCCore.data.preview import default_window

    volume, spacing = _to_ras(np.asarray(image, dtype=np.float32), affine)
    colours = np.stack([_to_ras(rgb[..., c], affine)[0] for c in range(3)], axis=-1).astype(np.float32)
    low, high = default_window(volume)
    i, j, k = (n // 2 for n in volume.shape)
    views = [  # (take a 2-D [row, col] slice, mm per column, mm per row), as data.preview
        (lambda v: np.swapaxes(v[::-1, ::-1, k], 0, 1), spacing[0], spacing[1]),
        (lambda v: np.swapaxes(v[::-1, j, ::-1], 0, 1), spacing[0], spacing[2]),
        (lambda v: np.swapaxes(v[i, ::-1, ::-1], 0, 1), spacing[1], spacing[2]),
    ]
    scale = panel_px / max(max(n * s for n, s in zip(volume.shape, spacing)), 1e-6)
    panels = []
    for take, col_mm, row_mm in views:
        grey = np.clip((take(volume) - low) / max(high - low, 1e-6), 0.0, 1.0)[..., None] * 255.0
        blended = (1 - alpha) * grey + alpha * take(colours)
        size = (max(1, round(blended.shape[1] * col_mm * scale)), max(1, round(blended.shape[0] * row_mm * scale)))
        panels.append(PILImage.fromarray(np.round(blended).astype(np.uint8)).resize(size, PILImage.BILINEAR))
    gap = 6
    canvas = PILImage.new("RGB", (sum(p.size[0] for p in panels) + gap * (len(panels) + 1),
                                  max(p.size[1] for p in panels) + 2 * gap))
    x = gap
    for panel in panels:
        canvas.paste(panel, (x, gap))
        x += panel.size[0] + gap
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(png_path, format="PNG")
    return png_path


def _to_ras(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flip/permute ``array`` to the closest RAS axes; return it and its spacing per new axis."""
    from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

    transform = ornt_transform(io_orientation(affine), axcodes2ornt("RAS"))
    spacing = np.empty(3)
    spacing[transform[:, 0].astype(int)] = np.linalg.norm(affine[:3, :3], axis=0)
    return np.asarray(apply_orientation(array, transform)), spacing
