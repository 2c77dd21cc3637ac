"""Command cleaning and POSIX argv splitting (reference §2.15).

The plan stores `cmd` and `cmdStop` as argv lists so the runtime never parses
shell-like text.  Splitting follows the original's lexer, which is *not*
Python's `shlex`:

- whitespace is space, tab and newline only (a carriage return is a normal
  character);
- `'...'` takes everything literally; in `"..."` a backslash escapes only
  `$`, backtick, `"`, `\\` and a newline (otherwise it stays);
- outside quotes a backslash escapes any character, and a backslash before a
  newline or at the very end disappears;
- there are no comments mid-line, no variables, globs, pipes or redirections;
- an unterminated quote simply ends the token at the end of the text;
- `""` or `''` yields an empty argument.

Lines whose trimmed text starts with `#` are dropped twice, as the original
does: once before macro substitution (so a macro named in a comment is never
expanded or reported) and once more before splitting.
"""

from __future__ import annotations

import re

_POSIX_SPACE = " \t\n"
_DQ_ESCAPABLE = '$`"\\'
# Go's unicode.IsSpace (what strings.TrimSpace trims): Python's str.isspace()
# set minus the information separators U+001C..U+001F.
GO_SPACE = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_POSIX_SPACE_RUN = re.compile(f"[{_POSIX_SPACE}]+")


def go_trim(text: str) -> str:
    """Go's strings.TrimSpace."""
    return text.strip(GO_SPACE)


def strip_comments(text: str) -> str:
    """Drop lines whose trimmed form starts with `#`; keep every other line verbatim."""
    return "\n".join(line for line in text.split("\n") if not go_trim(line).startswith("#"))


def clean_command(text: str) -> str:
    """Drop comment lines and turn a trailing backslash into a space (line continuation)."""
    lines: list[str] = []
    for line in text.split("\n"):
        trimmed = go_trim(line)
        if trimmed.startswith("#"):
            continue
        if trimmed.endswith("\\"):
            lines.append(trimmed[:-1] + " ")
        else:
            lines.append(line)
    return "\n".join(lines)


def split_posix(text: str) -> list[str]:
    """Split `text` into arguments with the POSIX dialect described in the module docstring."""
    if "'" not in text and '"' not in text and "\\" not in text:
        # The common case: with no quote or backslash, arguments are the runs between spaces.
        return [arg for arg in _POSIX_SPACE_RUN.split(text) if arg]
    return lex_posix(text)


def lex_posix(text: str) -> list[str]:
    """The full lexer behind `split_posix`, character by character (quotes and backslashes)."""
    tokens: list[str] = []
    token: list[str] | None = None  # None: no token started
    quote = ""  # "", "'" or '"'
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        nxt = text[i + 1] if i + 1 < n else ""
        if quote == "'":
            if ch == "'":
                quote = ""
            else:
                assert token is not None
                token.append(ch)
            i += 1
            continue
        if quote == '"':
            assert token is not None
            if ch == "\\":
                if nxt in ("", "\n"):
                    i += 2  # escaped newline (or a backslash at the end) vanishes
                    continue
                if nxt in _DQ_ESCAPABLE:
                    token.append(nxt)
                    i += 2
                    continue
                token.append(ch)  # any other backslash stays literal
                i += 1
                continue
            if ch == '"':
                quote = ""
            else:
                token.append(ch)
            i += 1
            continue
        # outside quotes
        if ch == "\\":
            if nxt in ("", "\n"):
                i += 2
                continue
            if token is None:
                token = []
            token.append(nxt)
            i += 2
            continue
        if ch in "'\"":
            if token is None:
                token = []
            quote = ch
            i += 1
            continue
        if ch in _POSIX_SPACE:
            if token is not None:
                tokens.append("".join(token))
                token = None
            i += 1
            continue
        if token is None:
            token = []
        token.append(ch)
        i += 1
    if token is not None:
        tokens.append("".join(token))
    return tokens


class EmptyCommand(ValueError):
    """The command has no arguments after cleaning."""


def command_argv(text: str) -> list[str]:
    """Clean and split a command; raises EmptyCommand when nothing is left."""
    argv = split_posix(clean_command(text))
    if not argv:
        raise EmptyCommand("empty command")
    return argv
