"""Lets `python -m vidclf` run where the package is on PYTHONPATH but not installed."""

from vidclf.cli import app

app(prog_name="vidclf")
