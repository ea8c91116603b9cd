"""Page understanding: find every system (pianoform, single staff, voice + piano) on a page.

    pages = load_page_images("score.pdf", pages="1-2")
    result = detect_systems(pages[0])
    crops = [crop_system(pages[0], box) for box in result.boxes]

`pages_io` reads images and PDFs (bounded); `normalize`, `staves`, `systems` find staves and
systems; `barlines` finds a system's barlines and the measure runs it is read in; `draw` overlays.
"""

from .pages_io import PageInputError, load_page_images, parse_pages
from .systems import DetectionResult, StaffBox, SystemBox, crop_system, detect_systems

__all__ = ["DetectionResult", "PageInputError", "StaffBox", "SystemBox", "crop_system", "detect_systems",
           "load_page_images", "parse_pages"]
