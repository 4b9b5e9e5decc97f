"""Text that came from users, made inert wherever it is shown: on a page, in a CSV, on a terminal.

File names, class folders, data set names and error messages that quote them are chosen by
whoever uploads; on a shared server everyone else sees them. Each output acts on some text
rather than showing it: Markdown renders ``![t](http://host/img.png)`` as an image the viewer's
browser fetches, a spreadsheet runs a cell that begins with ``=``, a terminal obeys escape
sequences and right-to-left overrides. This is the one rule for all three: first every character
a terminal or a log would act on is written out as its escape (``\\x1b``, ``\\u202e``), then
each output's own syntax is neutralised. It imports nothing of ours: every layer may use it.
"""

from __future__ import annotations

import re
import unicodedata

# Characters a terminal or a log acts on rather than shows: controls (escape sequences, carriage
# returns, new lines), format characters (right-to-left overrides), separators and private or
# lone codes.
_ACTIVE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
# Markdown that a name could smuggle in: links, images, emphasis, code, headings, HTML-ish tags,
# Streamlit's :icon: and :colour[...] directives, LaTeX.
_MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~:$])")
# How a spreadsheet recognises a formula (fullwidth forms included, which some convert).
_FORMULA_STARTS = tuple("=+-@\uff1d\uff0b\uff0d\uff20")


def terminal(text: object) -> str:
    """``text`` with every character a terminal would act on written out as an escape: names
    from an upload never move a cursor, colour a screen, break a line or reverse one."""
    return "".join(
        ch if unicodedata.category(ch) not in _ACTIVE else ch.encode("unicode_escape").decode("ascii")
        for ch in str(text)
    )


def markdown(text: object) -> str:
    """``text`` shown literally in Streamlit's Markdown (headings, captions, messages, labels):
    a name written like a link or an image renders as those characters, not as one."""
    return _MARKDOWN_SPECIALS.sub(r"\\\1", terminal(text))


def csv_cell(text: object) -> str:
    """``text`` as a CSV cell that a spreadsheet shows rather than computes: a cell that would
    begin a formula gets a leading apostrophe (what spreadsheets themselves use to mean text)."""
    cell = terminal(text)
    return "'" + cell if cell.startswith(_FORMULA_STARTS) else cell
