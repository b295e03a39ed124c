"""DFOS configuration files read as defaults: config.createJob, config.createAB, config.processQC.

Sites keep their settings in ``$DFO_CONFIG_DIR/config.<tool>`` (the AB syntax: ``KEY value``,
``#`` comments). abflow maps the keys it understands onto its own configuration keys:

===================================  ======================
``config.createJob CAL_CLEANUP``      ``cal_cleanup``
``config.createJob FULL_RAWDOWNLOAD`` ``full_rawdownload``
``config.createJob MAX_JOBS``         ``limits.jobs``
``config.createJob MAX_CORES``        ``limits.downloads`` (downloads at once)
``config.createJob PLUGIN``           ``plugin``
``config.createJob MEF_FACTOR``       ``mef_factor``
``config.createAB DRS_TYPE``          ``drs_type``
``config.createAB GEN_CALDIR``        ``inputs.GEN_CALDIR`` (static calibrations, read-only)
``config.processQC QCBQS_TYPE``       ``qc_mode`` (also ``QC_MODE``, ``BQS_TYPE``; CON = PAR)
===================================  ======================

A value also set in abflow's own configuration wins; the difference is reported. Where each
value came from (file, line, DFOS key) is kept for ``abflow check``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from abflow.model.ab import Problem, split_line
from abflow.model.commands import control_character

YES = ("YES", "Y", "TRUE", "1", "ON")
NO = ("NO", "N", "FALSE", "0", "OFF")


@dataclass(frozen=True)
class LegacyValue:
    """One value taken from a DFOS config file."""

    key: str  # abflow config key, dotted (limits.jobs)
    value: Any
    source: str  # file:line KEY


def _yes_no(text: str) -> bool:
    upper = text.upper()
    if upper in YES:
        return True
    if upper in NO:
        return False
    raise ValueError("expected YES or NO")


def _positive_int(text: str) -> int:
    if not text.isdigit():
        raise ValueError("expected a whole number")
    return int(text)


def _directory(text: str) -> str:
    expanded = os.path.expandvars(text)
    if not expanded.startswith("/"):
        raise ValueError("expected an absolute directory")
    return expanded


def _choice(*allowed: str, aliases: Mapping[str, str] | None = None) -> Callable[[str], str]:
    def parse(text: str) -> str:
        upper = (aliases or {}).get(text.upper(), text.upper())
        if upper not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}")
        return upper

    return parse


# file -> {DFOS key: (abflow key, parser)}
MAPPING: dict[str, dict[str, tuple[str, Callable[[str], Any]]]] = {
    "config.createJob": {
        "CAL_CLEANUP": ("cal_cleanup", _yes_no),
        "FULL_RAWDOWNLOAD": ("full_rawdownload", _yes_no),
        "MAX_JOBS": ("limits.jobs", _positive_int),
        "MAX_CORES": ("limits.downloads", _positive_int),
        "PLUGIN": ("plugin", str),
        "MEF_FACTOR": ("mef_factor", _positive_int),
    },
    "config.createAB": {
        "DRS_TYPE": ("drs_type", _choice("CPL", "CON", "INT")),
        "GEN_CALDIR": ("inputs.GEN_CALDIR", _directory),
    },
    "config.processQC": {
        "QCBQS_TYPE": ("qc_mode", _choice("SER", "PAR", "IMPLICIT", aliases={"CON": "PAR"})),
        "QC_MODE": ("qc_mode", _choice("SER", "PAR", "IMPLICIT", aliases={"CON": "PAR"})),
        "BQS_TYPE": ("qc_mode", _choice("SER", "PAR", "IMPLICIT", aliases={"CON": "PAR"})),
    },
}


MAX_LEGACY_BYTES = 16 << 20  # a DFOS config file is a few kB


def read_legacy(config_dir: str) -> tuple[list[LegacyValue], list[Problem]]:
    """The values abflow understands in the DFOS config files of ``config_dir``.

    Each key abflow reads is single-valued: given twice in one file, or contradicted by
    another key of the same setting (QC_MODE against QCBQS_TYPE), it is a problem naming both
    lines (the other keys of the files, table-like ones included, may repeat). A value
    with a control character (also once its ``$VARIABLES`` are expanded) or with bytes that
    are not UTF-8 is a problem too; the rest of a file need not be UTF-8 (comments).
    """
    from abflow.model.ab import read_regular

    values: list[LegacyValue] = []
    problems: list[Problem] = []
    for name, keys in MAPPING.items():
        path = os.path.join(config_dir, name)
        try:
            data = read_regular(path, MAX_LEGACY_BYTES)
        except FileNotFoundError:
            continue
        except OSError as exc:
            problems.append(Problem(path, None, f"cannot read: {exc.strerror}"))
            continue
        except ValueError as exc:
            problems.append(Problem(path, None, f"{exc}: a DFOS config file is a text file"))
            continue
        lines = data.decode("utf-8", errors="replace").split("\n")
        _read_lines(path, lines, keys, values, problems)
    return values, problems


def _read_lines(
    path: str,
    lines: list[str],
    keys: Mapping[str, tuple[str, Callable[[str], Any]]],
    values: list[LegacyValue],
    problems: list[Problem],
) -> None:
    """The values of ``keys`` in the ``lines`` of the DFOS config file ``path``."""
    first: dict[str, int] = {}
    setting: dict[str, tuple[str, int, Any]] = {}  # abflow key -> (DFOS key, line, value)
    for lineno, line in enumerate(lines, start=1):
        cols = split_line(line)
        if not cols or cols[0] not in keys:
            continue
        if cols[0] in first:
            problems.append(
                Problem(
                    path,
                    lineno,
                    f"{cols[0]} given twice (first on line {first[cols[0]]}): keep one",
                )
            )
            continue
        first[cols[0]] = lineno
        target, parse = keys[cols[0]]
        if len(cols) != 2:
            problems.append(
                Problem(path, lineno, f"{cols[0]} needs exactly one value, got {len(cols) - 1}")
            )
            continue
        try:
            value = parse(_printable(cols[1]))
            if isinstance(value, str) and value != cols[1]:
                _printable(value, " (with its $VARIABLES expanded)")
        except ValueError as exc:
            problems.append(Problem(path, lineno, f"{cols[0]} {cols[1]!r}: {exc}"))
            continue
        other, other_line, other_value = setting.setdefault(target, (cols[0], lineno, value))
        if other_value != value:  # QC_MODE against QCBQS_TYPE: two keys of one setting
            why = (
                f"{cols[0]} {cols[1]} contradicts {other} on line {other_line} (both set {target})"
            )
            problems.append(Problem(path, lineno, f"{why}: keep one"))
            continue
        values.append(LegacyValue(target, value, f"{path}:{lineno} {cols[0]}"))


def _printable(text: str, how: str = "") -> str:
    """``text``, if it has no control character and was UTF-8 (ValueError otherwise)."""
    control = control_character(text)
    if control:
        raise ValueError(f"contains {control}{how}: a value must be printable")
    if "\ufffd" in text:
        raise ValueError("not UTF-8 text (Latin-1 perhaps): save the file as UTF-8")
    return text


def _get(config: Mapping[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _set(config: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def apply_legacy(
    raw: Mapping[str, Any], config: dict[str, Any], values: list[LegacyValue]
) -> tuple[list[str], dict[str, str]]:
    """Put legacy values into ``config`` where ``raw`` (the user's config) does not set the key.

    Returns notes on values the user's configuration overrides, and for every key taken from a
    DFOS file where it came from (``<file>:<line> <DFOS key>``). Several DFOS keys for one
    setting (QCBQS_TYPE, QC_MODE, BQS_TYPE in one file) must agree (read_legacy); the first
    line is named.
    """
    notes: list[str] = []
    sources: dict[str, str] = {}
    for item in values:
        present, current = _get(raw, item.key)
        if present:
            if current != item.value:
                notes.append(
                    f"{item.source} = {item.value!r} differs from {item.key}: {current!r} in "
                    "the configuration; using the configuration's"
                )
            continue
        if item.key in sources:
            continue
        _set(config, item.key, item.value)
        sources[item.key] = item.source
    return notes, sources
