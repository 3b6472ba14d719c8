"""Text from a run (a response, a question, a name, an error message) put into Markdown: compare.md, report.md
and the GitHub step summary (summary.md).  GitHub renders raw HTML inside Markdown, so such text is escaped
to show as written and never become markup."""

from __future__ import annotations

import html


def escaped(value: object) -> str:
    """`value` as Markdown text that stays in its table cell or line: HTML escaped, `|` escaped, newlines as
    <br> (the one tag this adds)."""
    return html.escape(str(value), quote=False).replace("|", "\\|").replace("\r", "").replace("\n", "<br>")
