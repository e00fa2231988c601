"""Text from outside (a file, a tag, an argument) shown so that what is there can be seen.

A byte-order mark, a zero-width space or a newline inside a value makes two strings that look the
same compare different, and a newline in an error message breaks "one line". These helpers name
such characters instead of printing them.
"""

from __future__ import annotations

import unicodedata

#: Characters that print as nothing (or as a plain space) but are not a plain space.
_NAMES = {
    "\ufeff": "a byte-order mark (U+FEFF)",
    "\u200b": "a zero-width space (U+200B)",
    "\u200c": "a zero-width non-joiner (U+200C)",
    "\u200d": "a zero-width joiner (U+200D)",
    "\u2060": "a word joiner (U+2060)",
    "\u00a0": "a no-break space (U+00A0)",
}


def is_invisible(char: str) -> bool:
    """Control, format, separator (other than a plain space) and unassigned characters."""
    if char == " ":
        return False
    category = unicodedata.category(char)
    return category[0] in "CZ"


def describe_char(char: str) -> str:
    """ "a byte-order mark (U+FEFF)", "a newline (U+000A)", "U+2062 INVISIBLE TIMES"."""
    if char in _NAMES:
        return _NAMES[char]
    simple = {"\n": "a newline", "\r": "a carriage return", "\t": "a tab", "\x00": "a NUL"}
    code = f"U+{ord(char):04X}"
    if char in simple:
        return f"{simple[char]} ({code})"
    name = unicodedata.name(char, "")
    return f"{code} {name}".strip()


def invisibles(text: str) -> list[str]:
    """Each invisible character of `text`, described, with where it is ("at the start")."""
    found = []
    for i, char in enumerate(text):
        if is_invisible(char):
            where = "at the start" if i == 0 else "at the end" if i == len(text) - 1 else f"at {i}"
            found.append(f"{describe_char(char)} {where}")
    return found


def visible(text: str) -> str:
    """`text` with every invisible character escaped (\\n, \\t, \\x00, \\ufeff): one line."""
    out = []
    for char in text:
        if not is_invisible(char):
            out.append(char)
        elif char in "\n\r\t":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[char])
        elif ord(char) < 0x100:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) < 0x10000:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    return "".join(out)
