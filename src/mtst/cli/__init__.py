"""The ``mtst`` command line: the application and its entry point (:mod:`mtst.cli.app`), one module per
kind of command, and what they read and write (:mod:`mtst.cli.io`)."""

from __future__ import annotations

from importlib import import_module

from mtst.cli.app import app, main, run

# Each module registers its commands as it is imported, in the order `mtst --help` lists them.
COMMAND_MODULES = ("embed", "train", "predict", "serve", "export")
for _name in COMMAND_MODULES:
    import_module(f"mtst.cli.{_name}")

__all__ = ["COMMAND_MODULES", "app", "main", "run"]
