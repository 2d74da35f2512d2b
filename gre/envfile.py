"""Read a shell fragment of variable assignments (``/etc/default/*``) as a POSIX shell would.

The Bitfusion AMI's ``/etc/default/gpurestengine`` is written for ``sh``: quoted values and
assignments continued over lines with a trailing backslash. Neither of the usual readers gets
it right: systemd's ``EnvironmentFile=`` joins a continued line into the previous value
(``CAFFE_MODEL`` would swallow ``MEAN=...``), and ``source`` sets variables without exporting
them. So gre reads the file itself, with the shell's rules (POSIX.1-2017, XCU 2.2 Quoting,
2.3 Token Recognition, 2.9.1 Simple Commands) for the subset such files use:

- ``#`` at the start of a word comments out the rest of the line; a backslash at the end of
  a comment does not continue it (a comment ends at the newline, whatever precedes it).
- Outside single quotes, backslash-newline is removed: the line continues, also inside
  double quotes and in the middle of a word.
- ``'...'`` keeps everything literally; in ``"..."`` a backslash escapes only ``$ ` " \\``
  and newline; outside quotes it escapes any character.
- Commands end at a newline or ``;``. A command is one or more ``NAME=value`` words,
  optionally after ``export``; ``export NAME`` alone is accepted and changes nothing (every
  variable read here is handed to gre as if exported).
- A carriage return outside quotes counts as a blank, so a file saved with CRLF line ends
  reads as intended (sh would keep it in the value).

What gre cannot do as the shell would is an error rather than a guess: any other command
(including ``NAME=value command``), ``$`` expansions (``$VAR``, ``${VAR}``, ``$(...)``),
backquotes, operators (``| & < > ( )``) and unbalanced quotes. ``~`` is left as written (gre
expands it in model paths). The standard library's :mod:`shlex` is not used: in POSIX mode it
keeps backslash-newline as a newline character in the value, ends a word at a ``#`` inside
it (``a#b``), and drops the command boundaries that ``export`` and ``NAME=value command``
need.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

#: A shell variable name (XBD 3.235 Name) followed by ``=``: what makes a word an assignment.
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
#: After ``$``, what starts a parameter expansion or command substitution in sh.
_EXPANSION_START = re.compile(r"[A-Za-z0-9_{(@*#?$!-]")
#: A refused expansion is quoted in the message up to a blank or quote (40 characters at most).
_SHOWN_END = re.compile(r"[\s\"']")
_OPERATORS = "|&<>()"
#: Backslash escapes these inside double quotes (XCU 2.2.3); newline is handled apart.
_DQUOTE_ESCAPES = '$`"\\'


class EnvFileError(ValueError):
    """The file is not a fragment of plain assignments; the message names the file and line."""


@dataclass
class _Word:
    """One word after quote removal. ``plain`` is its leading unquoted, unescaped text, which
    decides whether the word is an assignment (``"A"=1`` is a command in sh, not one)."""

    line: int
    start: int
    raw: str = ""
    text: list[str] = field(default_factory=list)
    plain: list[str] = field(default_factory=list)
    quoted: bool = False

    def add(self, chars: str, *, literal: bool = True) -> None:
        """Append ``chars``; ``literal=False`` marks quoted or escaped text."""
        self.text.append(chars)
        if not literal:
            self.quoted = True
        elif not self.quoted:
            self.plain.append(chars)


class _Scanner:
    """Splits the text into commands (lists of words) as the shell's token recognition does."""

    def __init__(self, text: str, path: Path) -> None:
        self.text, self.path = text, path
        self.pos, self.line = 0, 1
        self.word: _Word | None = None
        self.command: list[_Word] = []
        self.commands: list[list[_Word]] = []

    def error(self, message: str, line: int | None = None) -> EnvFileError:
        return EnvFileError(f"{self.path}, line {line or self.line}: {message}")

    def scan(self) -> list[list[_Word]]:
        while self.pos < len(self.text):
            self.step(self.text[self.pos])
        self.end_command()
        return self.commands

    def step(self, char: str) -> None:
        """Consume the token that starts with ``char`` at ``self.pos``."""
        if char == "\\":
            self.backslash()
        elif char in " \t\r":
            self.end_word()
            self.pos += 1
        elif char in "\n;":
            self.end_command()
            self.line += char == "\n"
            self.pos += 1
        elif char == "#" and self.word is None:
            end = self.text.find("\n", self.pos)  # the newline itself still ends the command
            self.pos = len(self.text) if end < 0 else end
        elif char == "'":
            self.single_quoted()
        elif char == '"':
            self.double_quoted()
        elif char == "`" or char in _OPERATORS:
            raise self.error(f"{char!r} is shell syntax gre does not run; write plain values")
        elif char == "$":
            self.dollar()
            self.current().add("$")
            self.pos += 1
        else:
            self.current().add(char)
            self.pos += 1

    def current(self) -> _Word:
        if self.word is None:
            self.word = _Word(self.line, self.pos)
        return self.word

    def end_word(self) -> None:
        if self.word is not None:
            self.word.raw = self.text[self.word.start : self.pos]
            self.command.append(self.word)
            self.word = None

    def end_command(self) -> None:
        self.end_word()
        if self.command:
            self.commands.append(self.command)
            self.command = []

    def backslash(self) -> None:
        following = self.text[self.pos + 1 : self.pos + 2]
        if following == "\n":  # line continuation: both characters vanish
            self.line += 1
        elif not following:
            raise self.error("backslash at the end of the file")
        else:
            self.current().add(following, literal=False)
        self.pos += 2

    def single_quoted(self) -> None:
        start = self.line
        end = self.text.find("'", self.pos + 1)
        if end < 0:
            raise self.error("unterminated single quote", start)
        body = self.text[self.pos + 1 : end]
        self.current().add(body, literal=False)
        self.line += body.count("\n")
        self.pos = end + 1

    def double_quoted(self) -> None:
        start = self.line
        word = self.current()
        word.add("", literal=False)  # "" is an empty word, and quoting ends the plain prefix
        self.pos += 1
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == '"':
                self.pos += 1
                return
            following = self.text[self.pos + 1 : self.pos + 2]
            if char == "\\" and following == "\n":  # continuation, inside quotes too
                self.line += 1
                self.pos += 2
                continue
            if char == "\\" and following and following in _DQUOTE_ESCAPES:
                char = following
                self.pos += 1
            elif char == "`":
                raise self.error("'`' (command substitution) is not supported")
            elif char == "$":
                self.dollar()
            word.add(char, literal=False)
            self.line += char == "\n"
            self.pos += 1
        raise self.error("unterminated double quote", start)

    def dollar(self) -> None:
        """Refuse a ``$`` that sh would expand; a lone one (``a$``, ``$ b``) is literal."""
        if _EXPANSION_START.match(self.text, self.pos + 1):
            shown = _SHOWN_END.split(self.text[self.pos : self.pos + 40], maxsplit=1)[0]
            raise self.error(
                f"{shown!r}: gre does not expand variables or run commands; write the value"
            )


def _assignments(command: list[_Word], path: Path) -> list[tuple[str, str]]:
    """``(name, value)`` for each word of one command, or :class:`EnvFileError`."""
    words = command
    if "".join(words[0].plain) == "export" and not words[0].quoted:
        words = words[1:]
        # ``export NAME``: exports a variable already set; a no-op here.
        words = [w for w in words if not _NAME.match("".join(w.text)) or w.quoted]
    pairs = []
    for word in words:
        plain = "".join(word.plain)
        match = _ASSIGNMENT.match(plain)
        if match is None:
            raise EnvFileError(
                f"{path}, line {word.line}: {word.raw!r} is not NAME=value (gre reads "
                "assignments only; it runs no commands)"
            )
        name = match.group()[:-1]
        pairs.append((name, "".join(word.text)[len(name) + 1 :]))
    return pairs


def parse_env(text: str, path: Path) -> dict[str, str]:
    """The variables a POSIX shell would set by running ``text`` (see the module's rules), in
    the order first set; a later assignment of a name replaces its value, as in sh.

    Raises:
        EnvFileError: anything but assignments (names ``path`` and the line).
    """
    variables: dict[str, str] = {}
    for command in _Scanner(text, path).scan():
        variables.update(_assignments(command, path))
    return variables


def read_env_file(path: Path | str) -> dict[str, str]:
    """Read the file at ``path`` (UTF-8) with :func:`parse_env`.

    Raises:
        OSError: the file cannot be read (``FileNotFoundError`` when it does not exist).
        EnvFileError: it is not a fragment of plain assignments, or not UTF-8.
    """
    path = Path(path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise EnvFileError(f"{path}, line {line}: not UTF-8 text") from exc
    return parse_env(text, path)
