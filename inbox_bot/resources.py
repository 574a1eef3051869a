"""Where the packaged ``rules/`` and ``templates/`` live.

A wheel carries them inside the package (``inbox_bot/_data/``, see pyproject.toml); a source
checkout or an editable install finds them at the top of the repository.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _find(name: str) -> Path:
    packaged = _PACKAGE / "_data" / name
    return packaged if packaged.is_dir() else _PACKAGE.parent / name


def default_rules_dir() -> Path:
    return _find("rules")


def default_templates_dir() -> Path:
    return _find("templates")
