"""WSGI entry point: `gunicorn -c deploy/gunicorn.conf.py acai_omr.wsgi:app`."""

from acai_omr import create_app

app = create_app()
