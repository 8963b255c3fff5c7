"""Where things are: the repository's root, the one place the tests find it from."""

from __future__ import annotations

from pathlib import Path

#: The repository: tests/support/paths.py is two folders below it.
ROOT = Path(__file__).resolve().parent.parent.parent
#: The Node.js contract checkers and their pinned modules (``make js``).
JS_DIR = ROOT / "tests" / "js"
