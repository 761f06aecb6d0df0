"""Draw the extension and module icons (128×128 PNG) with Pillow; run once, the PNGs are committed.

    python Resources/make_icons.py

The picture: an axial "slice" (grey torso outline) split into patch tokens, a few of them tinted like
an embedding overlay, and two organ-like blobs outlined like a segmentation.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
TARGETS = (ROOT / "Resources" / "S2DC.png", ROOT / "S2DCExtension" / "Resources" / "Icons" / "S2DCExtension.png")
SIZE = 128


def draw_icon(size: int = SIZE) -> Image.Image:
    """The icon as an RGBA image of ``size``×``size`` pixels."""
    scale = 4  # draw large, then downsample: smooth edges without anti-aliasing support
    big = size * scale
    image = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle([0, 0, big - 1, big - 1], radius=22 * scale, fill=(28, 36, 52, 255))
    torso = [14 * scale, 22 * scale, 114 * scale, 106 * scale]
    draw.ellipse(torso, fill=(120, 126, 138, 255))
    step = 12 * scale
    tints = {(3, 3): (80, 170, 230), (4, 3): (80, 170, 230), (3, 4): (90, 200, 160), (5, 5): (240, 190, 80),
             (6, 5): (240, 190, 80), (2, 5): (200, 110, 200)}
    for (gx, gy), rgb in tints.items():
        x, y = 16 * scale + gx * step, 16 * scale + gy * step
        draw.rectangle([x, y, x + step - 2 * scale, y + step - 2 * scale], fill=(*rgb, 200))
    for gx in range(1, 10):
        x = 16 * scale + gx * step
        draw.line([x, 20 * scale, x, 108 * scale], fill=(28, 36, 52, 110), width=scale)
        draw.line([20 * scale, x, 108 * scale, x], fill=(28, 36, 52, 110), width=scale)
    draw.ellipse([34 * scale, 38 * scale, 66 * scale, 78 * scale], outline=(235, 96, 80, 255), width=4 * scale)
    draw.ellipse([72 * scale, 52 * scale, 96 * scale, 76 * scale], outline=(250, 220, 120, 255), width=4 * scale)
    return image.resize((size, size), Image.LANCZOS)


def main() -> None:
    icon = draw_icon()
    for target in TARGETS:
        target.parent.mkdir(parents=True, exist_ok=True)
        icon.save(target, optimize=True)


if __name__ == "__main__":
    main()
