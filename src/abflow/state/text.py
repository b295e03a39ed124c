"""Text from outside abflow, made inert where it is shown.

A recipe's log, a failure note's reason, an archive server's error text or an HTCondor hold
reason may hold control characters: escape sequences that retitle or clear a terminal, move the
cursor, or print a line that abflow did not write. :func:`inert` shows every such character as
a visible escape (``\\x1b``) on the console, in ``abflow watch`` and on the page; the files keep
what was written. Ordinary Unicode stays as it is.
"""

from __future__ import annotations

import re

# C0 controls but tab and newline, DEL, C1 controls, and the bidi embeddings, overrides and
# isolates (they reorder the text shown after them)
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_UNSAFE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_NAMED = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code in _NAMED:
        return _NAMED[code]
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def inert(text: object, line: bool = False) -> str:
    """``text`` (made a string) with every control character shown as an escape: C0 controls
    but newline and tab, a ``\\r`` not before a newline, DEL, C1 controls and the Unicode bidi
    overrides. ``line``: one line of a message (a reason, a host, a path): newline and tab are
    escaped too, so that it cannot start a line of its own."""
    text = str(text).replace("\r\n", "\n")
    return (_UNSAFE_LINE if line else _UNSAFE).sub(_escape, text)
