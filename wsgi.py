"""WSGI entry point: `gunicorn wsgi:app`."""

from recovery.app import create_app

app = create_app()
