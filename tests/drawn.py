"""Synthetic system images drawn pixel by pixel, for tests that need exact barline positions."""

import numpy as np


def drawn_system(stem_through_both: bool = True) -> np.ndarray:
    """A white 160x400 system: staves at rows 20-60 and 100-140, system line x=10, barlines x=200 and 390."""
    image = np.full((160, 400), 255, np.uint8)
    for top in (20, 100):
        for k in range(5):
            image[top + 10 * k, 10:391] = 0
    for x in (10, 200, 390):
        image[20:141, x] = 0
    if stem_through_both:  # chord stems crossing each whole staff at one x, running past it
        image[12:66, 100] = 0
        image[96:148, 100] = 0
    return image
