"""The Flask web app (app factory + blueprints)."""

from __future__ import annotations

from flask import Flask

from acai_omr.paths import REPO_ROOT


def create_app(config: dict | None = None) -> Flask:
    """Build the app; `config` overrides Flask settings (tests pass TESTING=True)."""
    app = Flask(
        __name__,
        template_folder=str(REPO_ROOT / "templates"),
        static_folder=str(REPO_ROOT / "static"),
    )
    if config:
        app.config.update(config)

    from acai_omr.web.pages import bp as pages_bp

    app.register_blueprint(pages_bp)
    return app
