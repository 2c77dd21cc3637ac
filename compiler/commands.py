"""Command cleaning and POSIX argv splitting.

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


class _Lexer:
    """POSIX shell word splitting, one character state at a time (no expansions, no operators).

    Each `_in_*` method consumes what starts at `i` in its quoting state and
    returns the index after it; `token` is None between words.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[str] = []
        self.token: list[str] | None = None
        self.quote = ""  # "", "'" or '"'

    def run(self) -> list[str]:
        i, n = 0, len(self.text)
        while i < n:
            if self.quote == "'":
                i = self._in_single(i)
            elif self.quote == '"':
                i = self._in_double(i)
            else:
                i = self._outside(i)
        self._end_word()
        return self.tokens

    def _next(self, i: int) -> str:
        return self.text[i + 1] if i + 1 < len(self.text) else ""

    def _word(self) -> list[str]:
        if self.token is None:
            self.token = []
        return self.token

    def _end_word(self) -> None:
        if self.token is not None:
            self.tokens.append("".join(self.token))
            self.token = None

    def _in_single(self, i: int) -> int:
        """Inside '...': everything is literal up to the closing quote."""
        ch = self.text[i]
        if ch == "'":
            self.quote = ""
        else:
            self._word().append(ch)
        return i + 1

    def _in_double(self, i: int) -> int:
        """Inside "...": a backslash escapes only a few characters and a newline."""
        ch, nxt = self.text[i], self._next(i)
        word = self._word()
        if ch == "\\":
            if nxt in ("", "\n"):
                return i + 2  # escaped newline (or a backslash at the end) vanishes
            if nxt in _DQ_ESCAPABLE:
                word.append(nxt)
                return i + 2
            word.append(ch)  # any other backslash stays literal
            return i + 1
        if ch == '"':
            self.quote = ""
        else:
            word.append(ch)
        return i + 1

    def _outside(self, i: int) -> int:
        """Unquoted: a backslash escapes anything, quotes open, blanks end the word."""
        ch, nxt = self.text[i], self._next(i)
        if ch == "\\":
            if nxt not in ("", "\n"):
                self._word().append(nxt)
            return i + 2
        if ch in "'\"":
            self._word()
            self.quote = ch
        elif ch in _POSIX_SPACE:
            self._end_word()
        else:
            self._word().append(ch)
        return i + 1


def lex_posix(text: str) -> list[str]:
    """The full lexer behind `split_posix`, character by character (quotes and backslashes)."""
    return _Lexer(text).run()


class EmptyCommand(ValueError):
    """The command has no arguments after cleaning."""


def command_argv(text: str) -> list[str]:
    """Clean and split a command; raises EmptyCommand when nothing is left."""
    argv = split_posix(clean_command(text))
    if not argv:
        raise EmptyCommand("empty command")
    return argv
