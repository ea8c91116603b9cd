"""Draw detections on a page, to check them by eye."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from .normalize import to_gray_array
from .systems import DetectionResult

KIND_COLOURS = {"piano": (220, 30, 30), "single": (30, 90, 230), "voice+piano": (200, 0, 200),
                "ensemble": (230, 130, 0)}


def draw_detections(page: Image.Image | np.ndarray, result: DetectionResult,
                    truth: list[tuple[float, float, float, float]] | None = None) -> Image.Image:
    """RGB copy of the page: each system's rectangle (its deskewed quad), its staves and label."""
    image = Image.fromarray(to_gray_array(page)).convert("RGB")
    draw = ImageDraw.Draw(image)
    width = max(2, image.width // 500)
    for box in truth or []:
        draw.rectangle(box, outline=(0, 160, 0), width=width)
    for i, box in enumerate(result.boxes, 1):
        colour = KIND_COLOURS.get(box.kind, (220, 30, 30))
        quad = [tuple(p) for p in box.quad] or [(box.x0, box.y0), (box.x1, box.y0), (box.x1, box.y1), (box.x0, box.y1)]
        draw.line(quad + [quad[0]], fill=colour, width=width)
        for staff in box.staves:
            draw.rectangle((staff.x0, staff.y0, staff.x1, staff.y1), outline=(0, 170, 220), width=max(1, width // 2))
        draw.text((box.x0 + 2 * width, box.y0 + width), f"{i} {box.kind} {box.confidence:.2f}", fill=colour)
    return image
