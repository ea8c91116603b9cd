"""Acai OMR: pianoform sheet music (photo, scan, PDF) to MusicXML."""

__version__ = "0.1.0"


def create_app(config: dict | None = None):
    """Flask app factory (`flask --app acai_omr run`); imported lazily to keep the CLI light."""
    from acai_omr.web import create_app as _create_app

    return _create_app(config)
