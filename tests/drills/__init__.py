"""Drills: load, outage, fuzzing and security checks run on every CI submission."""
