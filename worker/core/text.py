"""Text from the wire, made safe for the terminal of the person who reads it."""

from __future__ import annotations

import re
from typing import Final

#: C0 controls, DEL and C1 controls: an ESC sequence repaints a terminal, a newline forges a
#: line of output, U+009B is a one-character CSI.
CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with every control character shown escaped, as Python writes it (``\\x1b``)."""
    return CONTROL.sub(lambda found: found.group().encode("unicode_escape").decode(), text)
