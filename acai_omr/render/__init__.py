"""Engraver and image-tool wrappers: MuseScore 3 and ImageMagick subprocesses, SVG rasterizing,
and the output formats.

- `formats`: the registry of output formats (MusicXML, .mxl, MIDI, PDF, PNG, LMX, JSON): what the
  CLI, web jobs, the API and the page offer.
- `outputs`: MusicXML -> PNG/PDF/MIDI in one MuseScore call, .mxl in-process.
- `musescore`, `imagemagick`, `raster`: the tools themselves.
"""
