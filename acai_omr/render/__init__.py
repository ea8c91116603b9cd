"""Engraver and image-tool wrappers: MuseScore 3 and ImageMagick subprocesses, SVG rasterizing."""
