"""Make peer-supplied strings safe to show in a terminal.

Anything a mail client or server sent (EHLO names, usernames, banners) may carry control
characters (ANSI escapes can rewrite a terminal) or rich markup (``[red]``). ``escape_terminal``
turns control characters into visible ``\\xNN`` escapes; ``escape_markup`` also neutralises rich
markup for strings that will be rendered by rich.
"""

from __future__ import annotations

from rich.markup import escape as _rich_escape


def escape_terminal(text: str) -> str:
    out: list[str] = []
    for ch in text:
        code = ord(ch)
        if code < 0x20 or code == 0x7F or 0x80 <= code < 0xA0 or ch in "\u2028\u2029\u202e\u202d":
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def escape_markup(text: str) -> str:
    return _rich_escape(escape_terminal(text))
