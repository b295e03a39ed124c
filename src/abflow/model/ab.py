"""Parse DFOS Association Blocks (ABs).

An AB is a text file in the DFOS configuration syntax: one qualifier per line, the qualifier in
column 1, its content in the remaining whitespace-separated columns, ``#`` starting a comment,
qualifiers may repeat. See docs/dfos.md §2.

:func:`parse_ab` turns such a text into an :class:`AB`. It never raises on bad content; it
collects :class:`Problem` records (file, line, message) so that a whole night can be reported at
once. :func:`read_ab` does the same for a file on disk.

Paths are expanded (``$DFO_RAW_DIR``, ``${DFS_PRODUCT}``, ...) from a mapping built from the
configuration's ``dfo`` section, falling back to the environment, and must be absolute, normalised
and free of shell metacharacters.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

# Characters allowed in an AB name: the DFOS names are ARCFILE roots such as
# ``GIRAF.2013-02-13T10:02:03.123_tpl.ab``.
AB_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]*\.ab$")
# Characters allowed in a path taken from an AB (after variable expansion).
SAFE_PATH_RE = re.compile(r"^/[A-Za-z0-9._:+@=,/-]*$")
# Characters allowed in a SOF tag / PRO.CATG.
TAG_RE = re.compile(r"^[A-Za-z0-9_.+-]+$")
QUALIFIER_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
VARIABLE_RE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
# A recipe option as written in the AB (``--stack-method=ksigma``).
RECIPE_PARAM_RE = re.compile(r"^--[A-Za-z0-9][A-Za-z0-9_.-]*(=[A-Za-z0-9_.,:+/=-]*)?$")
RECIPE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
ROOT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]*$")
UNNORMALISED_RE = re.compile(r"//|/\.\.?(?:/|$)")

DRS_TYPES = ("CPL", "CON", "INT")
HISTORIC_DRS_TYPES = ("RBS", "REI")
MCALIB_FLAGS = ("VIRTUAL", "REAL")
NO_RECIPE = ("none", "NONE")
MAX_MEF_FACTOR = 256


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input file, pointing at the file and line."""

    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.message}"


class Frame(NamedTuple):
    """A file listed in an AB (RAWFILE, PRODUCTS) with its SOF tag and line number."""

    path: str
    tag: str
    line: int


class Mcalib(NamedTuple):
    """An MCALIB entry: a master calibration, VIRTUAL (made this night) or REAL (exists)."""

    kind: str
    path: str
    tag: str
    line: int

    @property
    def virtual(self) -> bool:
        """True for a virtual calibration (a product of another AB of the batch)."""
        return self.kind == "VIRTUAL"

    @property
    def needed_path(self) -> str:
        """The file a REAL calibration needs on disk: the FITS file, also where the AB names
        the header-only ``.hdr`` that cleanupProducts leaves behind."""
        if not self.virtual and self.path.endswith(".hdr"):
            return self.path[: -len(".hdr")] + ".fits"
        return self.path


class Qualifier(NamedTuple):
    """One qualifier line as written (after comment removal), kept verbatim."""

    name: str
    value: str
    line: int


@dataclass
class AB:
    """A parsed Association Block."""

    name: str
    path: str
    recipe: str = ""
    raw_type: str = ""
    drs_type: str = ""
    date: str = ""
    instrument: str = ""
    dpr_catg: str = ""
    prod_root_name: str = ""
    prod_path: str = ""
    mef_factor: int | None = None
    rawfiles: list[Frame] = field(default_factory=list)
    mcalibs: list[Mcalib] = field(default_factory=list)
    products: list[Frame] = field(default_factory=list)
    params: list[str] = field(default_factory=list)
    recipe_params: list[str] = field(default_factory=list)
    qualifiers: list[Qualifier] = field(default_factory=list)
    unknown_qualifiers: list[tuple[str, int]] = field(default_factory=list)
    digest: str = ""  # processing_digest(): what a rerun of the AB depends on

    @property
    def runs_recipe(self) -> bool:
        """False when RECIPE is none/NONE: nothing to run and nothing to download."""
        return bool(self.recipe) and self.recipe not in NO_RECIPE

    def first_line(self, qualifier: str) -> int | None:
        """Line number of the first occurrence of ``qualifier`` (None if absent)."""
        for q in self.qualifiers:
            if q.name == qualifier:
                return q.line
        return None


def stem(path: str) -> str:
    """File name without directory and extension (``/x/r.X_0000.hdr`` -> ``r.X_0000``)."""
    name = path.rsplit("/", 1)[-1]
    for suffix in (".fits.fz", ".fits", ".hdr", ".tfits", ".fz"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name.rsplit(".", 1)[0] if "." in name else name


def split_line(raw: str) -> list[str]:
    """Split one AB line into columns, dropping the ``#`` comment."""
    return raw.split("#", 1)[0].split()


def expand_variables(text: str, variables: Mapping[str, str]) -> tuple[str, list[str]]:
    """Expand ``$NAME`` and ``${NAME}`` from ``variables`` then the environment.

    Returns the expanded text and the names that could not be resolved (left as written).
    """
    unknown: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name in variables:
            return variables[name]
        if name in os.environ:
            return os.environ[name]
        unknown.append(name)
        return match.group(0)

    return VARIABLE_RE.sub(replace, text), unknown


def check_path(path: str, allowed_roots: tuple[str, ...] | None) -> str | None:
    """Return why ``path`` is unsafe, or None if it is fine.

    A safe path is absolute, contains no ``..``/``.`` components or doubled slashes, uses only
    ``SAFE_PATH_RE`` characters, has no component starting with ``-`` (a command would take it
    as an option) and, when ``allowed_roots`` is given, lies under one of them.
    """
    if not path.startswith("/"):
        return f"path {path!r} is not absolute"
    if not SAFE_PATH_RE.match(path):
        bad = sorted({c for c in path if not SAFE_PATH_RE.match("/" + c)})
        return f"path {path!r} contains unsafe characters {''.join(bad)!r}"
    if UNNORMALISED_RE.search(path):
        return f"path {path!r} is not normalised (contains '..', '.' or '//')"
    if "/-" in path:
        part = next(p for p in path.split("/") if p.startswith("-"))
        return (
            f"path {path!r} has a component starting with '-' ({part!r}): it would reach a "
            "command (the download) as an option; rename the file or directory"
        )
    if allowed_roots is not None and not any(_under(path, root) for root in allowed_roots):
        roots = ", ".join(allowed_roots)
        return f"path {path!r} is outside the configured directories ({roots})"
    return None


def _under(path: str, root: str) -> bool:
    """``path`` is ``root`` or inside it (both absolute and normalised)."""
    root = root.rstrip("/")
    return path == root or path.startswith(root + "/") or not root


@dataclass(frozen=True)
class PathPolicy:
    """Where the paths of an AB may point.

    ``inputs`` are the roots RAWFILE and MCALIB entries may lie under, ``outputs`` the roots
    PRODUCTS and PROD_PATH may lie under. None disables the containment check.
    """

    inputs: tuple[str, ...] | None = None
    outputs: tuple[str, ...] | None = None


def parse_ab(
    text: str,
    source: str,
    variables: Mapping[str, str] | None = None,
    policy: PathPolicy | None = None,
    dir_cache: dict[tuple[str, int], tuple[str, str | None]] | None = None,
) -> tuple[AB, list[Problem]]:
    """Parse the text of one AB.

    ``source`` is the file name used in problem reports (and as the AB's path); ``variables``
    maps ``DFO_*``/``DFS_*`` names to directories. Returns the AB (possibly incomplete) and the
    list of problems; the AB is usable only if the list is empty. ``dir_cache`` may be shared by
    the ABs of one night (same variables and policy): the directories of their paths repeat, and
    each is expanded and checked once.
    """
    parser = _Parser(source, variables or {}, policy or PathPolicy(), dir_cache)
    if "\x00" in text:
        lineno = text[: text.index("\x00")].count("\n") + 1
        parser.problem(lineno, "binary content (NUL byte): this is not an AB text file")
        text = text[: text.index("\x00")].rpartition("\n")[0]
    # lines end at "\n" only (as editors and `grep -n` count them); a "\r" before it is dropped
    for lineno, raw_line in enumerate(text.split("\n"), start=1):
        if raw_line.endswith("\r"):
            raw_line = raw_line[:-1]
        cols = (raw_line.split("#", 1)[0] if "#" in raw_line else raw_line).split()
        if cols:
            parser.line(lineno, cols[0], cols[1:])
    _check_completeness(parser.ab, parser.singles, parser.problem)
    parser.ab.digest = processing_digest(parser.ab)
    return parser.ab, parser.problems


class _Parser:
    """The state of one AB being parsed, and what each kind of line does to it."""

    def __init__(
        self,
        source: str,
        variables: Mapping[str, str],
        policy: PathPolicy,
        dir_cache: dict[tuple[str, int], tuple[str, str | None]] | None,
    ) -> None:
        self.source, self.variables, self.policy = source, variables, policy
        self.dir_cache = {} if dir_cache is None else dir_cache
        file_name = source.rsplit("/", 1)[-1]
        self.ab = AB(name=file_name, path=source)
        self.problems: list[Problem] = []
        self.singles: dict[str, int] = {}  # single-valued qualifier -> its line
        if not AB_NAME_RE.match(file_name):
            self.problem(
                None,
                f"unsafe or invalid AB file name {file_name!r}: an AB name must "
                "end in '.ab' and use only letters, digits and . _ : + - (no spaces, "
                "quotes, '/', '$' or ';')",
            )
        self.handlers = {
            "RAWFILE": self.rawfile,
            "MCALIB": self.mcalib,
            "PRODUCTS": self.products,
            "PARAM": self.param,
            "RECIPE_PARAM": self.recipe_param,
        }

    def problem(self, line: int | None, message: str) -> None:
        """Note a problem of the AB at ``line``."""
        self.problems.append(Problem(self.source, line, message))

    def line(self, lineno: int, name: str, args: list[str]) -> None:
        """One qualifier line: checked, kept verbatim, and interpreted where abflow does."""
        if name not in KNOWN_QUALIFIERS:
            if not QUALIFIER_RE.match(name):
                self.problem(
                    lineno,
                    f"malformed line: {name!r} is not a qualifier name "
                    "(expected e.g. RAWFILE, MCALIB, PRODUCTS in column 1)",
                )
                return
            meant = near_miss(name)
            if meant:
                self.problem(
                    lineno,
                    f"unknown qualifier {name!r}: did you mean {meant}? (a "
                    "misspelt qualifier would be ignored and change the processing "
                    "silently: fix the line)",
                )
                return
            self.ab.unknown_qualifiers.append((name, lineno))
        self.ab.qualifiers.append(Qualifier(name, " ".join(args), lineno))
        if name in _SINGLE_VALUED:
            self.single(lineno, name, args)
        elif name in self.handlers:
            self.handlers[name](lineno, args)
        # every other qualifier is kept verbatim in ab.qualifiers

    def single(self, lineno: int, name: str, args: list[str]) -> None:
        """A qualifier given once, with one value."""
        if name in self.singles:
            self.problem(
                lineno, f"{name} given twice (first on line {self.singles[name]}): keep one"
            )
            return
        self.singles[name] = lineno
        if len(args) != 1:
            self.problem(lineno, f"{name} needs exactly one value, got {len(args)}")
            return
        _set_single(self, name, args[0], lineno)

    def rawfile(self, lineno: int, args: list[str]) -> None:
        """RAWFILE <path> [<tag>]."""
        frame = self.frame("RAWFILE", lineno, args, self.policy.inputs)
        if frame is not None:
            self.ab.rawfiles.append(frame)

    def products(self, lineno: int, args: list[str]) -> None:
        """PRODUCTS <path> [<tag>]."""
        frame = self.frame("PRODUCTS", lineno, args, self.policy.outputs)
        if frame is not None:
            self.ab.products.append(frame)

    def frame(
        self, name: str, lineno: int, args: list[str], roots: tuple[str, ...] | None
    ) -> Frame | None:
        if len(args) not in (1, 2):
            self.problem(lineno, f"{name} needs '<path> <tag>', got {len(args)} columns")
            return None
        path = self.path_value(args[0], lineno, roots)
        tag = self.tag_value(args[1], lineno) if len(args) == 2 else ""
        return Frame(path, tag, lineno) if path is not None and tag is not None else None

    def mcalib(self, lineno: int, args: list[str]) -> None:
        """MCALIB VIRTUAL|REAL <path> <tag> (no flag: an existing calibration, REAL)."""
        if args and args[0] in MCALIB_FLAGS:
            kind, rest = args[0], args[1:]
        elif args and args[0].startswith(("/", "$")):
            kind, rest = "REAL", args  # tolerant: no flag means an existing calibration
        elif args:
            self.problem(lineno, f"unknown MCALIB flag {args[0]!r}: expected VIRTUAL or REAL")
            return
        else:
            kind, rest = "", []
        if len(rest) not in (1, 2):
            self.problem(
                lineno, f"MCALIB needs 'VIRTUAL|REAL <path> <tag>', got {len(args)} columns"
            )
            return
        path = self.path_value(rest[0], lineno, self.policy.inputs)
        tag = self.tag_value(rest[1], lineno) if len(rest) == 2 else ""
        if path is not None and tag is not None:
            self.ab.mcalibs.append(Mcalib(kind, path, tag, lineno))

    def param(self, lineno: int, args: list[str]) -> None:
        """PARAM <KEY=value>: kept as written."""
        self.ab.params.append(" ".join(args))

    def recipe_param(self, lineno: int, args: list[str]) -> None:
        """RECIPE_PARAM --option[=value] ...: each checked (they reach the recipe's command)."""
        for arg in args:
            if RECIPE_PARAM_RE.match(arg):
                self.ab.recipe_params.append(arg)
            else:
                self.problem(
                    lineno,
                    f"invalid recipe option {arg!r}: expected --name or "
                    "--name=value with letters, digits and _ . , : + / = -",
                )

    def path_value(self, raw: str, lineno: int, roots: tuple[str, ...] | None) -> str | None:
        """``raw`` with its variables expanded, if it is a safe path under ``roots``."""
        directory, slash, name = raw.rpartition("/")
        if slash and SAFE_NAME_RE.match(name):
            key = (directory, id(roots))
            hit = self.dir_cache.get(key)
            if hit is None:
                hit = self.dir_cache[key] = _checked_directory(directory, self.variables, roots)
            if hit[1] is None:
                return f"{hit[0]}/{name}"
        expanded, unknown = expand_variables(raw, self.variables) if "$" in raw else (raw, [])
        if unknown:
            names = ", ".join(f"${n}" for n in unknown)
            self.problem(
                lineno,
                f"undefined variable {names} in {raw!r}: set it in the "
                "config's dfo section or in the environment",
            )
            return None
        why = check_path(expanded, roots)
        if why:
            self.problem(lineno, why)
            return None
        return expanded

    def tag_value(self, raw: str, lineno: int) -> str | None:
        """``raw`` if it is a valid tag."""
        if not TAG_RE.match(raw):
            self.problem(lineno, f"invalid tag {raw!r}: use letters, digits and _ . + -")
            return None
        return raw


# A plain file name (the fast path of AB paths): not starting with '.' (``..``) or '-' (an option).
SAFE_NAME_RE = re.compile(r"^[A-Za-z0-9_:+@=,][A-Za-z0-9._:+@=,-]*$")


def _checked_directory(
    directory: str, variables: Mapping[str, str], roots: tuple[str, ...] | None
) -> tuple[str, str | None]:
    """(expanded directory, why it is unsafe or None) for the directory part of an AB path.

    A path ``<directory>/<plain name>`` is safe exactly when ``<directory>/x`` is, so the
    verdict of the directory holds for every file in it; anything else goes the long way.
    """
    expanded, unknown = (
        expand_variables(directory, variables)
        if "$" in directory
        else (
            directory,
            [],
        )
    )
    if unknown:
        return expanded, "undefined variable"
    return expanded, check_path(expanded + "/x", roots)


_SINGLE_VALUED = frozenset(
    {
        "AB_NAME",
        "RECIPE",
        "RAW_TYPE",
        "DRS_TYPE",
        "DATE",
        "INSTRUMENT",
        "DPR_CATG",
        "PROD_ROOT_NAME",
        "PROD_PATH",
        "MEF_FACTOR",
    }
)
# The qualifiers abflow interprets.
_PARSED = _SINGLE_VALUED | {"RAWFILE", "MCALIB", "PRODUCTS", "PARAM", "RECIPE_PARAM"}
# Every qualifier createAB (and processAB, updateAB) writes (docs/dfos.md §2): accepted
# silently, kept verbatim. Anything else is a near miss of one of these (an error: "did you mean
# MCALIB") or an unknown qualifier (a warning, or an error with unknown_qualifiers: error).
KNOWN_QUALIFIERS = _PARSED | {
    "TOOL_VERSION", "CONFIG_VERSION", "PACK_DIR", "BATCH_ID", "AB_EVENT", "COMPLETENESS",
    "PROCESS_STATUS", "OBS_PROG_ID", "OBS_ID", "OBS_MODE", "MJD-OBS", "MJD-OBS_MOD", "LOG_NAME",
    "RAW_MATCH_KEY", "RB_NAME", "MASSOC", "PARAMS",
}  # fmt: skip
# The qualifiers whose content reaches the recipe, its set-of-frames or its products: a change
# to one of them reruns the AB (and its descendants). Bookkeeping that processAB and updateAB
# write into the AB (PROCESS_STATUS, LOG_NAME, timestamps), the other header lines and the
# comments do not.
PROCESSING_QUALIFIERS = (
    "RECIPE", "RECIPE_PARAM", "PARAM", "RAWFILE", "MCALIB", "PRODUCTS", "PROD_PATH",
    "PROD_ROOT_NAME", "RAW_TYPE", "DRS_TYPE", "MEF_FACTOR",
)  # fmt: skip


def processing_digest(ab: AB) -> str:
    """Checksum of what processing an AB depends on (PROCESSING_QUALIFIERS, in file order,
    whitespace-normalised, comments dropped): ``p`` + 12 hex digits."""
    text = "\n".join(
        f"{q.name} {q.value}" for q in ab.qualifiers if q.name in PROCESSING_QUALIFIERS
    )
    return "p" + hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


def _osa_distance(a: str, b: str) -> int:
    """Edit distance with transpositions of neighbours (optimal string alignment)."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        row = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                row[j] = min(row[j], prev2[j - 2] + 1)
        prev2, prev = prev, row
    return prev[-1]


def near_miss(name: str) -> str | None:
    """The known qualifier ``name`` is a near miss of (other case, a letter missing, extra,
    wrong or two swapped), or None."""
    upper = name.upper()
    if upper in KNOWN_QUALIFIERS:
        return upper
    if len(upper) < 4:
        return None
    best: tuple[int, str] | None = None
    for known in KNOWN_QUALIFIERS:
        limit = 2 if len(known) >= 10 else 1
        if abs(len(known) - len(upper)) > limit:
            continue
        distance = _osa_distance(upper, known)
        if distance <= limit and (best is None or (distance, known) < best):
            best = (distance, known)
    return best[1] if best else None


def _set_single(parser: _Parser, name: str, value: str, lineno: int) -> None:
    """Check and set the value of a single-valued qualifier."""
    ab = parser.ab
    if name == "PROD_PATH":
        path = parser.path_value(value, lineno, parser.policy.outputs)
        if path is not None:
            ab.prod_path = path
        return
    why = _SINGLE_CHECKS.get(name, lambda v, ab: None)(value, ab)
    if why:
        parser.problem(lineno, why)
    elif name in _SINGLE_FIELDS:
        setattr(ab, _SINGLE_FIELDS[name], int(value) if name == "MEF_FACTOR" else value)


def _drs_type_problem(value: str, ab: AB) -> str | None:
    if value in DRS_TYPES:
        return None
    if value in HISTORIC_DRS_TYPES:
        return f"historic DRS_TYPE {value!r} is not supported: use one of {', '.join(DRS_TYPES)}"
    return f"unknown DRS_TYPE {value!r}: expected one of {', '.join(DRS_TYPES)}"


# single-valued qualifier -> why its value is wrong (None: it is fine)
_SINGLE_CHECKS: dict[str, Callable[[str, AB], str | None]] = {
    "AB_NAME": lambda v, ab: None if v == ab.name else (
        f"AB_NAME {v!r} does not match the file name {ab.name!r}: rename the file or fix "
        "AB_NAME"),
    "RECIPE": lambda v, ab: None if v in NO_RECIPE or RECIPE_RE.match(v) else (
        f"invalid RECIPE {v!r}: expected a recipe name or 'none'"),
    "RAW_TYPE": lambda v, ab: None if TAG_RE.match(v) else f"invalid RAW_TYPE {v!r}",
    "DRS_TYPE": _drs_type_problem,
    "DATE": lambda v, ab: None if DATE_RE.match(v) else (
        f"invalid DATE {v!r}: expected YYYY-MM-DD"),
    "PROD_ROOT_NAME": lambda v, ab: None if ROOT_NAME_RE.match(v) else (
        f"invalid PROD_ROOT_NAME {v!r}"),
    "MEF_FACTOR": lambda v, ab: None if v.isascii() and v.isdigit()
    and 1 <= int(v) <= MAX_MEF_FACTOR else (
        f"invalid MEF_FACTOR {v!r}: expected a whole number from 1 to {MAX_MEF_FACTOR}"),
}  # fmt: skip
# single-valued qualifier -> the AB attribute its value goes to (AB_NAME: only checked)
_SINGLE_FIELDS = {
    "RECIPE": "recipe",
    "RAW_TYPE": "raw_type",
    "DRS_TYPE": "drs_type",
    "DATE": "date",
    "INSTRUMENT": "instrument",
    "DPR_CATG": "dpr_catg",
    "PROD_ROOT_NAME": "prod_root_name",
    "MEF_FACTOR": "mef_factor",
}


def _check_completeness(ab: AB, singles: dict[str, int], problem) -> None:
    if ab.raw_type:  # tolerant: a RAWFILE without a tag takes the AB's RAW_TYPE
        ab.rawfiles = [f if f.tag else Frame(f.path, ab.raw_type, f.line) for f in ab.rawfiles]
    for cal in ab.mcalibs:
        if not cal.tag:
            problem(cal.line, "MCALIB has no tag (PRO.CATG): expected 'VIRTUAL|REAL <path> <tag>'")
    if "RECIPE" not in singles:
        problem(None, "no RECIPE line: every AB names its recipe (or 'none')")
    if ab.runs_recipe and not ab.rawfiles and not any(q.name == "RAWFILE" for q in ab.qualifiers):
        problem(None, "no RAWFILE line: an AB that runs a recipe needs raw input files")
    for frame in ab.rawfiles:
        if not frame.tag and not ab.raw_type:
            problem(frame.line, "RAWFILE has no tag and the AB has no RAW_TYPE to use instead")
    for kind, frames in (("product", ab.products), ("RAWFILE", ab.rawfiles)):
        seen: dict[str, int] = {}
        for frame in frames:
            if frame.path in seen:
                problem(
                    frame.line,
                    f"{kind} {frame.path!r} listed twice (also line {seen[frame.path]}): keep one",
                )
            seen.setdefault(frame.path, frame.line)


def read_ab(
    path: str,
    variables: Mapping[str, str] | None = None,
    policy: PathPolicy | None = None,
    dir_cache: dict[tuple[str, int], tuple[str, str | None]] | None = None,
) -> tuple[AB | None, list[Problem]]:
    """Read and parse the AB file at ``path``; problems include unreadable or non-text files,
    and a path that is not a regular file or is larger than MAX_AB_BYTES (:func:`read_regular`).

    ``dir_cache``: see parse_ab.
    """
    try:
        data = read_regular(path, MAX_AB_BYTES)
    except FileNotFoundError:
        return None, [Problem(path, None, "AB file does not exist")]
    except OSError as exc:
        return None, [Problem(path, None, f"cannot read AB file: {exc.strerror}")]
    except ValueError as exc:
        return None, [Problem(path, None, f"AB file {exc}: an AB is a small text file")]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return None, [
            Problem(
                path,
                line,
                f"not UTF-8/ASCII text (byte 0x{data[exc.start]:02x} at offset {exc.start}): "
                "an AB must be a plain text file",
            )
        ]
    ab, problems = parse_ab(text, path, variables, policy, dir_cache)
    if data and not data.endswith(b"\n"):
        problems.append(
            Problem(
                path,
                data.count(b"\n") + 1,
                "the file ends in the middle of a line (no newline at the end): it looks "
                "truncated, e.g. by an interrupted copy; restore the AB, or end the line with a "
                "newline if it is complete",
            )
        )
    return ab, problems


MAX_AB_BYTES = 4 << 20  # an AB is a few kB; more is not an AB (and would be read whole)
_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)  # fmt: skip


def _not_regular(info: os.stat_result, limit: int) -> str | None:
    """Why a file of status ``info`` cannot be read as a text input of at most ``limit`` bytes."""
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in _FILE_KINDS if test(info.st_mode)), "no regular file")
        return f"is {kind}, not a regular file"
    if info.st_size > limit:
        return f"is {info.st_size} bytes, more than the {limit >> 20} MiB allowed"
    return None


def read_regular(path: str, limit: int) -> bytes:
    """The content of the regular file at ``path`` (a symlink is followed), at most ``limit``
    bytes.

    Raises OSError as ``open`` does (FileNotFoundError if there is none), and ValueError saying
    what the path is if it is not a regular file (a FIFO, a device such as ``/dev/zero``, a
    directory) or holds more than ``limit`` bytes. The path is looked at before it is opened, and
    opened without blocking: a FIFO never hangs the reader, a device is never read.
    """
    why = _not_regular(os.stat(path), limit)
    if why:
        raise ValueError(why)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        why = _not_regular(os.fstat(fd), limit)  # what was opened (it may have been replaced)
        if why:
            raise ValueError(why)
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, min(1 << 20, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise ValueError(f"holds more than the {limit >> 20} MiB allowed")
    finally:
        os.close(fd)
    return b"".join(chunks)
