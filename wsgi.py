"""WSGI entry point: `gunicorn wsgi:app`."""

from recovery import heap
from recovery.app import create_app

app = create_app()
heap.settle()  # what the app built stays out of the collector's walks (recovery/heap.py)
