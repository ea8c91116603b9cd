"""HTML pages."""

from __future__ import annotations

from flask import Blueprint, render_template

from acai_omr.render.formats import WEB_FORMATS

bp = Blueprint("pages", __name__)


@bp.get("/")
def index():
    return render_template("index.html", formats=WEB_FORMATS)


@bp.get("/healthz")
def healthz():
    return {"status": "ok"}
