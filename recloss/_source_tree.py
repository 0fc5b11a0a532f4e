"""``recloss.backends`` when recloss is imported from the root of a source checkout.

An install maps the checkout's top-level ``backends/`` folder to ``recloss.backends`` (a wheel copies it there,
``editable_mode=strict`` links it there). But Python puts the current folder first on ``sys.path`` for
``python -m ...`` and ``python -c ...``: run from the checkout's root, ``import recloss`` then finds the
checkout's ``recloss/`` folder, which has no ``backends`` inside. This finder resolves exactly that one name
to ``../backends`` in that case (its submodules follow from its ``__path__``); anywhere else it is not
installed. It never makes a top-level ``backends`` importable.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Sequence

NAME = "recloss.backends"


class SourceTreeBackends(importlib.abc.MetaPathFinder):
    """Finds ``recloss.backends`` in ``folder`` (the checkout's ``backends/``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != NAME:
            return None
        return importlib.util.spec_from_file_location(NAME, self.folder / "__init__.py",
                                                      submodule_search_locations=[str(self.folder)])


def install(package_folder: Path) -> None:
    """Add the finder when ``package_folder`` (recloss's own folder) is a checkout's ``recloss/``: no
    ``backends`` inside, a ``backends`` package beside it."""
    beside = package_folder.parent / "backends"
    if (package_folder / "backends").exists() or not (beside / "__init__.py").is_file():
        return
    if not any(isinstance(finder, SourceTreeBackends) for finder in sys.meta_path):
        sys.meta_path.append(SourceTreeBackends(beside))
