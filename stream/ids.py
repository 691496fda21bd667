"""What an identifier or label may hold, for every boundary that takes one (events, plans,
decisions). Pure.

Identifiers become metric labels, alert labels, JSON, the live page and a pauser's command
environment. A character that does not print is refused wherever it is: C0 and C1 controls (a
NUL raises in a command's environment), line and paragraph separators (U+2028, U+2029 break
lines in logs), format characters (bidi overrides U+202A-U+202E and isolates U+2066-U+2069
reorder what a reader sees; zero-width U+200B-U+200D and U+FEFF are invisible) and every space
but U+0020 (U+00A0 looks like a space). Without them two ids that look alike on a page or in an
alert are the same id. The rule is Python's ``str.isprintable``: Unicode categories Cc, Cf, Cs,
Co, Cn (unassigned in this Python's Unicode version), Zl, Zp and Zs other than U+0020 are refused.
"""

from __future__ import annotations

import unicodedata

RULE = "control, format, separator or unassigned characters (U+0020 is the one space allowed)"


def unprintable(value: str) -> str | None:
    """Why ``value`` cannot be an id or label (its first character that does not print), or
    None. One C-speed check for the usual id."""
    if value.isprintable():
        return None
    for character in value:
        if not character.isprintable():
            category = unicodedata.category(character)
            name = (
                "a control character" if category == "Cc" else unicodedata.name(character, "")
            ) or f"category {category}"
            return f"holds U+{ord(character):04X} ({name}): ids hold no {RULE}"
    return None  # pragma: no cover (isprintable was False, so a character is not)
