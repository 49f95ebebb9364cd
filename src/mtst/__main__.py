"""``python -m mtst`` runs the command line."""

from mtst.cli import run

run()
