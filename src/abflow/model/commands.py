"""Shell command templates: checking and filling them safely.

A template is a shell command line with ``{placeholder}`` fields (``processAB -a {ab}``). Every
value is substituted shell-quoted, so nothing taken from an AB or the configuration can add a
command of its own. ``{{`` and ``}}`` stand for literal braces.

That holds only where the placeholder stands outside quotes of the template's own: a value
substituted inside ``"..."`` gets its quotes closed by ``shlex.quote``'s, and ``"a$(cmd)"``
runs ``cmd``. :func:`check_template` therefore refuses a placeholder within quotes (also within
``$(...)`` or backquotes inside quotes) or in a ``#`` comment, and control characters.
"""

from __future__ import annotations

import shlex
import string
from collections.abc import Iterable, Mapping

# Placeholders each command template may use (the README's Configuration section lists them).
# {config} is the run's configuration file (every directory resolved; abflow commands take it
# with --configfile).
PLACEHOLDERS: dict[str, tuple[str, ...]] = {
    "process_ab": ("ab", "ab_file", "date", "mode", "threads", "config"),
    "process_qc": ("ab", "ab_file", "date", "mode", "threads", "config"),
    "process_ab_det": ("ab", "ab_file", "date", "mode", "threads", "det", "config"),
    "mef_join": ("ab", "ab_file", "date", "mode", "threads", "config"),
    "download": ("file", "dest", "date", "mode", "config"),
    "monitor": ("date", "mode", "config"),
    "dfo_monitor": ("date", "mode", "config"),
}


class TemplateError(ValueError):
    """A command template that cannot be used."""


def template_fields(template: str) -> list[str]:
    """Names of the placeholders used in ``template`` (raises TemplateError if malformed)."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise TemplateError(f"malformed template {template!r}: {exc}") from None
    names = []
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise TemplateError(
                f"malformed placeholder {{{name}{'!' + conversion if conversion else ''}"
                f"{':' + spec if spec else ''}}} in {template!r}: use plain {{name}}"
            )
        names.append(name)
    return names


# Templates that abflow createjob writes into a job file line (JOBS_NIGHT, JOBS_AUTO).
ONE_LINE = ("monitor", "dfo_monitor")


def check_template(step: str, template: str, allowed: Iterable[str] | None = None) -> str | None:
    """Return why ``template`` cannot serve ``step``, or None if it can: unknown or malformed
    placeholders, a placeholder within quotes or a comment (:func:`quoting_problem`), a control
    character other than a tab or a line break (a line break too in ONE_LINE templates)."""
    allowed = tuple(allowed if allowed is not None else PLACEHOLDERS[step])
    if not template.strip():
        return f"commands.{step} is empty"
    try:
        names = template_fields(template)
    except TemplateError as exc:
        return f"commands.{step}: {exc}"
    unknown = sorted(set(names) - set(allowed))
    if unknown:
        return (
            f"commands.{step} uses unknown placeholder(s) "
            f"{', '.join('{' + n + '}' for n in unknown)}; allowed: "
            f"{', '.join('{' + n + '}' for n in allowed)}"
        )
    control = control_character(template, allowed="\t" if step in ONE_LINE else "\t\n")
    if control:
        where = "; it goes into a job file line (JOBS_NIGHT)" if step in ONE_LINE else ""
        return f"commands.{step}: {template!r} contains {control}{where}: remove it"
    why = quoting_problem(template)
    return f"commands.{step}: {why}" if why else None


def fill(template: str, values: Mapping[str, object]) -> str:
    """Fill ``template`` with ``values``, each shell-quoted.

    Placeholders not used by the template are ignored; a used placeholder missing from
    ``values``, or one the shell would not take as a word of its own (:func:`quoting_problem`),
    raises TemplateError.
    """
    names = template_fields(template)
    why = quoting_problem(template)
    if why:
        raise TemplateError(why)
    missing = sorted(set(names) - set(values))
    if missing:
        raise TemplateError(f"no value for placeholder(s) {missing} in {template!r}")
    quoted = {name: shlex.quote(str(values[name])) for name in names}
    return template.format_map(quoted)


# C0 controls, DEL and C1 controls (what a terminal or a shell line may act on)
_CONTROL = {chr(c) for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
_CONTROL_NAMES = {
    "\n": "a line break",
    "\r": "a carriage return",
    "\t": "a tab",
    "\x1b": "an escape character",
    "\x00": "a NUL character",
}


DFOS_PROCESS_AB = "processAB"  # DFOS's processAB (the default commands.process_ab)


def whole_machine(command: str) -> str:
    """An AB's command under DRS_TYPE INT: DFOS's processAB is called with ``-l`` (the recipe
    may use the whole machine), as createJob writes INT's execAB lines; another program is
    called as configured (it gets the cores in ``{threads}``)."""
    words = command.split()
    if words[:1] == [DFOS_PROCESS_AB] and "-l" not in words:
        return f"{command} -l"
    return command


def control_character(text: str, allowed: str = "") -> str | None:
    """What the first control character of ``text`` (C0, DEL, C1; not those in ``allowed``)
    is and where, e.g. ``a line break (U+000A) at character 5``; None if it has none."""
    for index, char in enumerate(text):
        if char in _CONTROL and char not in allowed:
            name = _CONTROL_NAMES.get(char, "a control character")
            return f"{name} (U+{ord(char):04X}) at character {index + 1}"
    return None


_QUOTES = {"'": "single quotes '...'", '"': 'double quotes "..."', "$'": "quotes $'...'"}
_WORD_START = " \t\n;&|()"


class _ShellQuotes:
    """The shell's quoting state while a template is read left to right: the open contexts
    (quotes, ``$(``, ``(``, backquotes, a ``#`` comment), innermost last."""

    def __init__(self) -> None:
        self.stack: list[str] = []
        self.escape = False  # the last character was an unquoted backslash
        self.last = ""  # the last character read ("" at the start)

    def read(self, text: str) -> None:
        """Advance over the literal ``text``."""
        i = 0
        while i < len(text):
            escaped = self.escape
            i += self._char(text[i], text[i + 1 : i + 2])
            self.last = "x" if escaped else text[i - 1]

    def _char(self, char: str, after: str) -> int:
        """Read ``char`` (``after`` is the next character); how many characters it took."""
        context = self.stack[-1] if self.stack else ""
        if context == "#":
            if char == "\n":
                self.stack.pop()
            return 1
        if self.escape:
            self.escape = False
            return 1
        if context in ("'", "$'"):
            if char == "'":
                self.stack.pop()
            elif char == "\\" and context == "$'":
                self.escape = True
            return 1
        return self._code(char, after, context)

    def _code(self, char: str, after: str, context: str) -> int:
        """A character outside single quotes and comments."""
        if char == "\\":
            self.escape = True
        elif char in ('"', "`") and context == char:
            self.stack.pop()
        elif char in ('"', "`"):
            self.stack.append(char)
        elif char == "$" and after in ("(", "'", '"') and (after == "(" or context != '"'):
            self.stack.append({"(": "$(", "'": "$'", '"': '"'}[after])
            return 2
        elif context == '"':
            return 1
        elif char == "'":
            self.stack.append("'")
        elif char == "(":
            self.stack.append("(")
        elif char == ")" and context in ("$(", "("):
            self.stack.pop()
        elif char == "#" and (not self.last or self.last in _WORD_START):
            self.stack.append("#")
        return 1

    def around(self) -> str | None:
        """What a placeholder here would stand in that the shell would not leave as one word
        (quotes, a comment, right after a backslash or a ``$``), or None."""
        quotes = [c for c in self.stack if c in _QUOTES]
        if quotes:
            within = " within $(...) or backquotes" if self.stack[-1] not in _QUOTES else ""
            return f"inside {_QUOTES[quotes[-1]]}{within}"
        if "#" in self.stack:
            return "inside a # comment"
        if self.escape:
            return "right after a backslash"
        if self.last == "$":
            return "right after a '$'"
        return None


def quoting_problem(template: str) -> str | None:
    """Why a placeholder of ``template`` would not be one shell word of its own, or None.

    abflow shell-quotes every value (:func:`fill`); a placeholder inside the template's own
    quotes (``"{ab_file}"``, ``--x='{dest}'``, also in ``$(...)`` or backquotes within quotes),
    in a comment, or right after a backslash or ``$`` would have those quotes undone, and a
    value such as ``a$(touch x)`` would run. Quotes left open at the end are refused too.
    """
    state = _ShellQuotes()
    for literal, name, _spec, _conversion in string.Formatter().parse(template):
        state.read(literal)
        if name is None:
            continue
        where = state.around()
        if where:
            advice = (
                f"write {{{name}}} without quotes around it (--x={{{name}}}, not "
                f'--x="{{{name}}}"); quote only the fixed text beside it'
                if where.startswith("inside") and "comment" not in where
                else f"{{{name}}} must stand as a word of its own"
            )
            return (
                f"placeholder {{{name}}} is {where} in {template!r}: abflow shell-quotes every "
                f"value itself, so {advice}"
            )
        state.last = "x"  # the value: one word
    open_quotes = [c for c in state.stack if c in _QUOTES]
    if open_quotes:
        return f"{template!r} leaves {_QUOTES[open_quotes[-1]]} open: close them"
    return None
