"""Shell command templates: checking and filling them safely.

A template is a shell command line with ``{placeholder}`` fields (``processAB -a {ab}``). Every
value is substituted shell-quoted, so nothing taken from an AB or the configuration can add a
command of its own. ``{{`` and ``}}`` stand for literal braces.
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
    "monitor": ("date", "mode"),
    "dfo_monitor": ("date", "mode"),
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


def check_template(step: str, template: str, allowed: Iterable[str] | None = None) -> str | None:
    """Return why ``template`` cannot serve ``step``, or None if it can."""
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
    return None


def fill(template: str, values: Mapping[str, object]) -> str:
    """Fill ``template`` with ``values``, each shell-quoted.

    Placeholders not used by the template are ignored; a used placeholder missing from
    ``values`` raises TemplateError.
    """
    names = template_fields(template)
    missing = sorted(set(names) - set(values))
    if missing:
        raise TemplateError(f"no value for placeholder(s) {missing} in {template!r}")
    quoted = {name: shlex.quote(str(values[name])) for name in names}
    return template.format_map(quoted)
