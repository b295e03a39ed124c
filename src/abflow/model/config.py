"""abflow configuration: validation against the schema, defaults, and resolved settings.

The same code serves the Snakefile (which passes Snakemake's ``config`` dict) and the ``abflow``
CLI (which reads ``--configfile`` and ``--config key=value``). The JSON Schema in
``workflow/schemas/config.schema.yaml`` documents and defaults every key.
"""

from __future__ import annotations

import copy
import datetime as _dt
import functools
import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from abflow.model.commands import PLACEHOLDERS, check_template, control_character
from abflow.state.layout import StateLayout

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # src/abflow


def find_root() -> Path:
    """The abflow checkout: ``$ABFLOW_ROOT``, else the directory above ``src/`` with a Snakefile."""
    env = os.environ.get("ABFLOW_ROOT")
    if env:
        return Path(env).resolve()
    candidate = PACKAGE_DIR.parents[1]
    if (candidate / "Snakefile").is_file():
        return candidate
    return Path.cwd()


ROOT = find_root()
SCHEMA_PATH = ROOT / "workflow" / "schemas" / "config.schema.yaml"
if not SCHEMA_PATH.is_file():  # installed without a checkout: the packaged copy
    SCHEMA_PATH = PACKAGE_DIR / "schemas" / "config.schema.yaml"
DEFAULT_CONFIGFILE = ROOT / "config" / "config.yaml"
EXAMPLE_DIR = ROOT / "resources" / "example"

# config key in `dfo` -> (environment variable, sub-directory of the example tree)
DFO_DIRS: dict[str, tuple[str, str]] = {
    "ab_dir": ("DFO_AB_DIR", "ab"),
    "mon_dir": ("DFO_MON_DIR", "mon"),
    "job_dir": ("DFO_JOB_DIR", "jobs"),
    "raw_dir": ("DFO_RAW_DIR", "raw"),
    "cal_dir": ("DFO_CAL_DIR", "cal"),
    "log_dir": ("DFO_LOG_DIR", "logs"),
    "product_dir": ("DFS_PRODUCT", "products"),
    "config_dir": ("DFO_CONFIG_DIR", "config"),
}


class ConfigError(ValueError):
    """The configuration is invalid; the message lists every problem."""

    def __init__(self, problems: Sequence[str], source: str = "config") -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid configuration ({source}):\n{lines}")


@functools.cache
def load_schema() -> dict[str, Any]:
    """The configuration JSON Schema as a dict (read once; do not change it)."""
    import yaml

    with open(SCHEMA_PATH, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def _normalize_value(value: Any) -> Any:
    if isinstance(value, _dt.datetime):
        return value.date().isoformat()
    if isinstance(value, _dt.date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return normalize(value)
    if isinstance(value, list):
        return [_normalize_value(v) for v in value]
    return value


def normalize(config: Mapping[str, Any]) -> dict[str, Any]:
    """Copy ``config`` with YAML dates turned into ``YYYY-MM-DD`` strings and dotted keys nested.

    ``--config limits.jobs=2`` (Snakemake or CLI) arrives as the key ``limits.jobs``; it becomes
    ``{"limits": {"jobs": 2}}``, merged into any existing ``limits`` mapping.
    """
    out: dict[str, Any] = {}
    dotted: list[tuple[str, Any]] = []
    for key, value in config.items():
        if isinstance(key, str) and "." in key:
            dotted.append((key, value))
        else:
            out[key] = _normalize_value(value)
    for key, value in dotted:
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[leaf] = _normalize_value(value)
    return out


def _coerce(schema: Mapping[str, Any], instance: dict[str, Any]) -> None:
    """Turn strings into the numbers/booleans the schema asks for.

    Snakemake reads nested ``--config`` values (``limits={jobs: 4}``) as strings.
    """
    for key, sub in schema.get("properties", {}).items():
        value = instance.get(key)
        kind = sub.get("type")
        if isinstance(value, dict) and kind == "object":
            _coerce(sub, value)
        elif isinstance(value, str):
            text = value.strip()
            try:
                if kind == "integer" and text.lstrip("+-").isdigit():
                    instance[key] = int(text)
                elif kind == "number":
                    instance[key] = float(text)
                elif kind == "boolean" and text.lower() in ("true", "false"):
                    instance[key] = text.lower() == "true"
            except ValueError:
                pass


def _fill_defaults(schema: Mapping[str, Any], instance: dict[str, Any]) -> None:
    for key, sub in schema.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if isinstance(instance.get(key), dict) and sub.get("type") == "object":
            _fill_defaults(sub, instance[key])


def validate(config: Mapping[str, Any], source: str = "config") -> dict[str, Any]:
    """Validate ``config`` against the schema and return a copy with all defaults filled.

    Raises ConfigError listing every problem (with the key path of each).
    """
    import jsonschema

    schema = load_schema()
    instance = normalize(config)
    _coerce(schema, instance)
    _fill_defaults(schema, instance)
    validator = jsonschema.Draft202012Validator(schema)
    problems = []
    for err in sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path)):
        where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        if err.validator == "required":
            problems.append(f"{where}: {err.message} (set it in the config file or --config)")
        elif err.validator == "additionalProperties":
            problems.append(f"{where}: {err.message} (check the spelling against the schema)")
        else:
            problems.append(f"{where}: {err.message}")
    problems += value_problems(instance)
    for step in PLACEHOLDERS:
        template = instance.get("commands", {}).get(step)
        if isinstance(template, str):
            why = check_template(step, template)
            if why:
                problems.append(why)
    archive = instance.get("archive")
    if isinstance(archive, str) and "://" in archive:
        why = check_archive_url(archive)
        if why:
            problems.append(f"archive: {why}")
    if problems:
        raise ConfigError(problems, source)
    return instance


def _key_text(key: object) -> str:
    text = str(key)
    return repr(text) if control_character(text) else text


def value_problems(node: Any, where: str = "") -> list[str]:
    """What no configuration value may be, with the key of each: a number that is NaN or
    infinite (the schema's minimum checks let NaN through), a string (a directory, file name,
    AB name, ...) with a control character (C0, DEL, C1: a line break in a directory name would
    break out of a comment in JOBS_NIGHT). ``commands`` are checked by check_template."""
    problems: list[str] = []
    if isinstance(node, Mapping):
        for key, value in node.items():
            if not where and key == "commands":
                continue
            problems += value_problems(
                value, f"{where}.{_key_text(key)}" if where else _key_text(key)
            )
    elif isinstance(node, list):
        for index, value in enumerate(node):
            problems += value_problems(value, f"{where}[{index}]")
    elif isinstance(node, float) and not math.isfinite(node):
        problems.append(f"{where}: {node} is not a number abflow can use: give a finite number")
    elif isinstance(node, str) and control_character(node):
        problems.append(
            f"{where}: {node!r} contains {control_character(node)}: configured names and paths "
            "must be printable (rename the directory or file, or fix the value)"
        )
    return problems


def check_archive_url(url: str) -> str | None:
    """Why ``url`` is not a usable archive URL template, or None."""
    from urllib.parse import urlsplit

    parts = urlsplit(url.replace("{file}", "x"))
    if parts.scheme not in ("http", "https"):
        return f"{url!r}: only http:// and https:// archives are supported"
    if not parts.netloc:
        return f"{url!r}: no host in the URL"
    if url.count("{file}") != 1:
        return f"{url!r}: the URL template must contain {{file}} exactly once"
    return None


@dataclass(frozen=True)
class Settings:
    """A validated configuration with every directory resolved to an absolute path."""

    mode: str
    date: str
    dfo: dict[str, str]
    state_dir: str
    drs_type: str
    qc_mode: str
    commands: dict[str, str]
    limits: dict[str, int]
    full_rawdownload: bool
    cal_cleanup: bool
    mef_factor: int
    subcascade: str
    check_products: bool
    archive: str
    fetch: dict[str, float]
    plugin: str
    status_export_dir: str
    root: str
    raw: dict[str, Any] = field(repr=False, default_factory=dict)
    notes: tuple[str, ...] = ()
    dates: tuple[str, ...] = ()
    inputs: dict[str, str] = field(default_factory=dict)  # read-only input roots by name
    unknown_qualifiers: str = "warn"
    missing_abs: str = "refuse"
    exclude: tuple[str, ...] = ()
    pool_env: tuple[str, ...] = ()  # environment variables handed to pool jobs
    # config key (dotted) -> where a value taken from a DFOS config file came from
    sources: dict[str, str] = field(default_factory=dict)
    steps: str = "all"  # all, ab (the ABs and their downloads) or qc (the QC of done ABs)

    def to_config(self) -> dict[str, Any]:
        """The configuration with every directory resolved: a complete, valid configuration
        that means the same from any directory (the run configuration jobs are given)."""
        cfg = copy.deepcopy(self.raw)
        cfg["date"] = self.date  # a run of several dates: its first (what {date} of a download is)
        cfg["dfo"] = dict(self.dfo)
        cfg["inputs"] = dict(self.inputs)
        cfg["state_dir"] = self.state_dir
        cfg["archive"] = self.archive
        cfg["status_export_dir"] = self.status_export_dir
        return cfg

    @functools.cached_property
    def roots(self) -> tuple[str, ...]:
        """Every configured directory (``dfo``, ``inputs``, the state and export directories)
        with its symbolic links resolved, once: what abflow reads and writes is checked to lie
        inside them (README: What abflow protects)."""
        from abflow.state.fsutil import resolve_roots

        dirs = [*self.dfo.values(), *self.inputs.values(), self.state_dir]
        return resolve_roots([*dirs, self.status_export_dir])

    @property
    def layout(self) -> StateLayout:
        """Where this night's state is kept (abflow.state.layout)."""
        return StateLayout(self.state_dir)

    @property
    def batch_id(self) -> str:
        """DFOS BATCH_ID of the night: ``<MODE>_<DATE>``; ``<MODE>_<FIRST>..<LAST>`` for a run of
        several dates."""
        if len(self.dates) > 1:
            return f"{self.mode}_{self.dates[0]}..{self.dates[-1]}"
        return f"{self.mode}_{self.date}"

    @property
    def batches(self) -> list[str]:
        """The BATCH_ID of every date of the run (one for a single night)."""
        return [f"{self.mode}_{d}" for d in self.dates or (self.date,)]

    def for_date(self, date: str) -> Settings:
        """These settings for the single night of ``date`` (one date of a multi-date run)."""
        import dataclasses

        return dataclasses.replace(self, date=date, dates=(date,))

    @property
    def ab_list_path(self) -> str:
        """The night's AB list, ``<mon_dir>/AB_list_<MODE>_<DATE>``."""
        return os.path.join(self.dfo["mon_dir"], f"AB_list_{self.mode}_{self.date}")

    def ab_file(self, ab: str) -> str:
        """Path of the AB file named ``ab`` in the AB directory."""
        return os.path.join(self.dfo["ab_dir"], ab)

    @property
    def variables(self) -> dict[str, str]:
        """The ``$DFO_*``/``$DFS_*`` names expanded in AB paths, from the resolved directories."""
        out = {env: self.dfo[key] for key, (env, _sub) in DFO_DIRS.items()}
        out["DFS_LOG"] = self.dfo["log_dir"]
        out.update(self.inputs)
        return out


def _resolve_dir(value: str, root: Path) -> str:
    path = Path(os.path.expanduser(os.path.expandvars(value)))
    if not path.is_absolute():
        path = root / path
    return os.path.normpath(str(path))


def _resolve_archive(value: str, root: Path) -> str:
    if "://" in value:
        return value
    return _resolve_dir(value or str(EXAMPLE_DIR / "archive"), root)


def resolve(
    config: Mapping[str, Any],
    root: Path | str | None = None,
    environ: Mapping[str, str] | None = None,
    source: str = "config",
) -> Settings:
    """Validate ``config`` and resolve it into Settings.

    Directories: the config value, else the ``$DFO_*`` environment variable, else (where no
    ``$DFO_*`` variable is set at all) the example tree; on a DFOS machine a directory that is
    neither is a ConfigError, never the example's. Relative paths are taken relative to
    ``root`` (the abflow checkout). Values the configuration leaves unset come from the DFOS
    configuration files in ``dfo.config_dir`` where it has them (abflow.model.legacy).
    """
    cfg = validate(config, source)
    root = Path(root) if root is not None else ROOT
    environ = os.environ if environ is None else environ
    given = {key: cfg["dfo"].get(key) or environ.get(env) for key, (env, _) in DFO_DIRS.items()}
    unset = [key for key, value in given.items() if not value]
    if unset and dfos_machine(environ):
        raise ConfigError(
            [
                f"dfo.{key} is not configured and ${DFO_DIRS[key][0]} is not set, on a DFOS "
                f"machine (other $DFO_* variables are): set ${DFO_DIRS[key][0]} (.dfosrc) or "
                f"dfo.{key}"
                for key in unset
            ],
            source,
        )
    dfo = {
        key: _resolve_dir(value or str(EXAMPLE_DIR / DFO_DIRS[key][1]), root)
        for key, value in given.items()
    }
    notes: list[str] = []
    sources: dict[str, str] = {}
    if os.path.isdir(dfo["config_dir"]):
        cfg, notes, sources = _with_legacy(config, cfg, dfo["config_dir"], source)
    _check_qc_reports(cfg.get("qc_reports") or "", dfo, source)
    settings = _settings(cfg, dfo, root, tuple(notes), sources, source)
    _check_resolved(settings, cfg["dfo"], source)
    return settings


def _check_resolved(settings: Settings, configured: Mapping[str, str], source: str) -> None:
    """Refuse a resolved directory with a control character: validate saw the configured
    values, not a ``$DFO_*`` variable or what a ``$NAME`` in a configured path expanded to."""
    named = {f"dfo.{key}": value for key, value in settings.dfo.items()}
    named |= {f"inputs.{key}": value for key, value in settings.inputs.items()}
    named |= {
        "state_dir": settings.state_dir,
        "status_export_dir": settings.status_export_dir,
        "archive": settings.archive,
    }
    problems = []
    for key, value in named.items():
        why = _unsafe_directory(value) if key != "archive" or "://" not in value else ""
        if not why:
            continue
        dfo_key = key.removeprefix("dfo.")
        if dfo_key in DFO_DIRS and not configured.get(dfo_key):
            where = f"${DFO_DIRS[dfo_key][0]} (the environment's {key})"
        else:
            where = f"{key} (with its environment variables expanded)"
        problems.append(f"{where}: {value!r} {why}; rename the directory or configure another one")
    if problems:
        raise ConfigError(problems, source)


# What a configured directory may be named with: the characters of an AB path (model/ab.py).
# Its name reaches shell commands quoted, and a command that parses its arguments again (eval,
# sh -c, ssh host processAB ...) must not find anything there that a shell would act on.
SAFE_DIRECTORY_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:+@=,/-"
)


def _unsafe_directory(value: str) -> str:
    """Why ``value`` is no safe directory name ("" if it is)."""
    control = control_character(value)
    if control:
        return f"contains {control}: a directory name must be printable"
    bad = sorted(set(value) - SAFE_DIRECTORY_CHARS)
    if bad:
        return (
            f"contains {''.join(bad)!r}: a configured directory may use only letters, "
            "digits and . _ : + @ = , / - (a shell would act on the others)"
        )
    return ""


QC_REPORT_PLACEHOLDERS = ("date", "mode", "ab", "ab_stem")


def _check_qc_reports(pattern: str, dfo: Mapping[str, str], source: str) -> None:
    """Refuse a ``qc_reports`` pattern with a placeholder abflow cannot fill."""
    import string

    known = (*QC_REPORT_PLACEHOLDERS, *dfo)
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(pattern) if f is not None}
    except ValueError as exc:
        raise ConfigError([f"qc_reports: {pattern!r} is not a pattern: {exc}"], source) from None
    unknown = sorted(n for n in names if n not in known)
    if unknown:
        raise ConfigError(
            [
                f"qc_reports: {pattern!r} uses {{{unknown[0]}}}; it may use "
                + ", ".join(f"{{{k}}}" for k in known)
            ],
            source,
        )


def _with_legacy(
    config: Mapping[str, Any], cfg: dict[str, Any], config_dir: str, source: str
) -> tuple[dict[str, Any], list[str], dict[str, str]]:
    """``cfg`` with the values of the DFOS configuration files it leaves unset, validated;
    what was said about them and where each came from."""
    from abflow.model.legacy import apply_legacy, read_legacy

    values, problems = read_legacy(config_dir)
    if problems:
        raise ConfigError([str(p) for p in problems], "DFOS configuration")
    notes, sources = apply_legacy(normalize(config), cfg, values)
    return validate(cfg, f"{source} with {config_dir}"), notes, sources


def _settings(
    cfg: dict[str, Any],
    dfo: dict[str, str],
    root: Path,
    notes: tuple[str, ...],
    sources: dict[str, str],
    source: str,
) -> Settings:
    """The Settings of a validated configuration and its resolved DFOS directories."""
    dates = parse_dates(cfg.get("date"), cfg.get("dates"), source)
    state_dir = _resolve_dir(cfg["state_dir"], root) if cfg["state_dir"] else ""
    export = cfg["status_export_dir"]
    return Settings(
        mode=cfg["mode"],
        date=dates[0],
        dates=tuple(dates),
        dfo=dfo,
        state_dir=state_dir or os.path.join(dfo["job_dir"], "abflow"),
        drs_type=cfg["drs_type"],
        qc_mode=cfg["qc_mode"],
        commands=dict(cfg["commands"]),
        limits=dict(cfg["limits"]),
        full_rawdownload=cfg["full_rawdownload"],
        cal_cleanup=cfg["cal_cleanup"],
        mef_factor=cfg["mef_factor"],
        subcascade=cfg["subcascade"],
        check_products=cfg["check_products"],
        archive=_resolve_archive(cfg["archive"], root),
        fetch=dict(cfg["fetch"]),
        plugin=cfg["plugin"],
        status_export_dir=_resolve_dir(export, root) if export else "",
        root=str(root),
        raw=cfg,
        notes=notes,
        inputs={name: _resolve_dir(path, root) for name, path in cfg["inputs"].items()},
        unknown_qualifiers=cfg["unknown_qualifiers"],
        missing_abs=cfg["missing_abs"],
        exclude=tuple(cfg["exclude"]),
        pool_env=tuple(cfg["pool_env"]),
        sources=sources,
        steps=cfg["steps"],
    )


MAX_DATES = 3660


def parse_dates(date: str | None, dates: Any, source: str = "config") -> list[str]:
    """The dates of a run: ``dates`` (a list, or an inclusive range ``A..B``), else ``[date]``.

    Every date must be a real calendar date, given once; a range must not end before it starts.
    """
    if not dates:
        if not date:
            raise ConfigError(
                ["date: no date given (set `date: YYYY-MM-DD`, or `dates` for several)"], source
            )
        items = [date]
    elif isinstance(dates, str) and ".." in dates:
        first, last = dates.split("..", 1)
        try:
            start, end = _dt.date.fromisoformat(first), _dt.date.fromisoformat(last)
        except ValueError as exc:
            raise ConfigError([f"dates: {dates!r}: {exc}"], source) from None
        if end < start:
            raise ConfigError([f"dates: the range {dates!r} ends before it starts"], source)
        if (end - start).days >= MAX_DATES:
            raise ConfigError([f"dates: {dates!r} spans more than {MAX_DATES} dates"], source)
        items = [(start + _dt.timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]
    else:
        items = [dates] if isinstance(dates, str) else list(dates)
    problems = []
    for item in items:
        try:
            _dt.date.fromisoformat(item)
        except ValueError:
            problems.append(f"dates: {item!r} is not a calendar date (YYYY-MM-DD)")
    repeated = sorted({d for d in items if items.count(d) > 1})
    if repeated:
        problems.append(f"dates: {', '.join(repeated)} given more than once")
    if problems:
        raise ConfigError(problems, source)
    return items


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """Parse ``key=value`` items as Snakemake's ``--config`` does (values read as YAML)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError([f"--config {item!r}: expected key=value"], "command line")
        try:
            out[key] = yaml.load(value, Loader=_yaml_loader()) if value else ""
        except (yaml.YAMLError, _DuplicateKey):
            out[key] = value
    return out


def run_config(settings: Settings) -> tuple[str, str]:
    """The run's configuration file (settings.to_config(), every directory resolved): its path
    in the state directory, which every job's command line names, and its text. The file is
    named by its checksum, so the same configuration is the same file, from any process."""
    text = json.dumps(settings.to_config(), sort_keys=True, indent=1) + "\n"
    checksum = hashlib.sha256(text.encode()).hexdigest()[:16]
    return settings.layout.run_config(checksum), text


def write_run_config(settings: Settings) -> str:
    """Write the run's configuration (:func:`run_config`) unless it is there; return its path.
    A run writes it when it starts (not while Snakemake reads the Snakefile: a dry-run writes
    nothing)."""
    from abflow.state.fsutil import atomic_write_text

    path, text = run_config(settings)
    try:
        with open(path, encoding="utf-8") as fh:
            same = fh.read() == text
    except (OSError, ValueError):
        same = False
    if not same:  # absent, or damaged since: what every job of the run reads
        atomic_write_text(path, text)
    return path


SITE_CONFIGFILE = "abflow.yaml"  # a DFOS site's configuration, in $DFO_CONFIG_DIR


def dfos_machine(environ: Mapping[str, str] | None = None) -> bool:
    """True where a DFOS environment is set up (any ``$DFO_*`` directory variable set)."""
    environ = os.environ if environ is None else environ
    return any(environ.get(env) for env, _sub in DFO_DIRS.values())


def default_configfile(environ: Mapping[str, str] | None = None) -> tuple[Path | None, str]:
    """The configuration used when none is named (``--configfile``), and what it is: in a
    job's command, the run's (``$ABFLOW_CONFIG``); on a DFOS machine (``$DFO_*`` set) the
    site's, ``$DFO_CONFIG_DIR/abflow.yaml``, or, without one, no file (the schema's defaults:
    the ``$DFO_*`` directories and the real DFOS tools); the bundled example's only where there
    is no DFOS environment."""
    environ = os.environ if environ is None else environ
    run = environ.get("ABFLOW_CONFIG", "")
    if run and os.path.isfile(run):  # a command of a job: its run's configuration
        return Path(run), f"{run} (the run's, $ABFLOW_CONFIG)"
    if not dfos_machine(environ):
        return DEFAULT_CONFIGFILE, f"{DEFAULT_CONFIGFILE} (the bundled example)"
    site = Path(environ.get("DFO_CONFIG_DIR") or "/nonexistent", SITE_CONFIGFILE)
    if site.is_file():
        return site, f"{site} (the site's: $DFO_CONFIG_DIR/{SITE_CONFIGFILE})"
    return None, (
        f"no configuration file ($DFO_CONFIG_DIR/{SITE_CONFIGFILE} does not exist): the "
        "schema's DFOS defaults ($DFO_* directories, processAB, processQC, ngasClient)"
    )


def load_settings(
    configfile: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
) -> Settings:
    """Read a config file (default: :func:`default_configfile`; :func:`read_config_file`),
    apply ``key=value`` overrides, resolve."""
    path = Path(configfile) if configfile else default_configfile()[0]
    data = read_config_file(path) or {} if path is not None else {}
    if not isinstance(data, dict):
        raise ConfigError(["the top level must be a mapping of keys"], str(path))
    merged = normalize(data)
    over = normalize(parse_overrides(overrides))
    _deep_update(merged, over)
    return resolve(merged, source=str(path or "the schema's defaults"))


def _deep_update(base: dict[str, Any], new: Mapping[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value


MAX_CONFIG_BYTES = 16 << 20  # a configuration is a few kB


def _config_text(path: Path) -> str:
    """The text of the configuration file ``path``: a regular UTF-8 file (ConfigError naming
    the file, and the line of the first byte that is not UTF-8)."""
    from abflow.model.ab import read_regular

    try:
        data = read_regular(str(path), MAX_CONFIG_BYTES)
    except FileNotFoundError:
        raise ConfigError([f"config file {path} does not exist"], str(path)) from None
    except OSError as exc:
        raise ConfigError(
            [f"config file {path} cannot be read: {exc.strerror}"], str(path)
        ) from None
    except ValueError as exc:
        raise ConfigError([f"config file {path} {exc}"], str(path)) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            [
                f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x}, Latin-1 perhaps): "
                "save the file as UTF-8"
            ],
            str(path),
        ) from None


class _DuplicateKey(Exception):
    def __init__(self, key: object, first: int, second: int) -> None:
        super().__init__(key, first, second)
        self.key, self.first, self.second = key, first, second


def _yaml_loader() -> type:
    """PyYAML's safe loader, refusing a mapping that has a key twice (PyYAML keeps the last
    one silently). Merge keys (``<<``) may still be overridden."""
    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: dict[Any, int] = {}
            for key_node, _value in node.value if isinstance(node, yaml.MappingNode) else ():
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(
                    key_node, yaml.ScalarNode
                ):
                    continue
                key = self.construct_object(key_node)
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise _DuplicateKey(key, seen[key], line)
                seen[key] = line
            return super().construct_mapping(node, deep=deep)

        def construct_yaml_timestamp(self, node: Any) -> Any:
            """A date stays as written unless it is one (``2013-02-30`` is then refused
            by the validation, naming the key, not by PyYAML with a traceback)."""
            try:
                return super().construct_yaml_timestamp(node)
            except ValueError:
                return self.construct_scalar(node)

    Loader.add_constructor("tag:yaml.org,2002:timestamp", Loader.construct_yaml_timestamp)
    return Loader


def read_config_file(path: str | os.PathLike[str]) -> Any:
    """The content of the YAML (or JSON) configuration file ``path``.

    ConfigError, naming the file (and line), for a file that does not exist, is not a regular
    file, is not UTF-8, is not valid YAML, or has a key twice in one mapping (both lines named).
    """
    import yaml

    path = Path(path)
    text = _config_text(path)
    try:
        return yaml.load(text, Loader=_yaml_loader())  # a SafeLoader
    except _DuplicateKey as dup:
        raise ConfigError(
            [
                f"{path}:{dup.second}: key {dup.key!r} given twice in one mapping "
                f"(first on line {dup.first}): keep one"
            ],
            str(path),
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"not valid YAML: {exc}"], str(path)) from None


def check_config_files(paths: Sequence[str | os.PathLike[str]]) -> None:
    """Refuse the configuration files the workflow was given (Snakemake reads them with its own
    loader, which keeps the last of a key given twice): read_config_file's checks, except that
    YAML Snakemake read (as JSON, perhaps) is not judged again, nor what is no regular file (a
    pipe Snakemake has read). No paths: the Snakefile's own config/config.yaml."""
    for path in paths or [p for p in [default_configfile()[0]] if p is not None]:
        if not os.path.isfile(path):
            continue
        try:
            read_config_file(path)
        except ConfigError as exc:
            if not exc.problems[0].startswith("not valid YAML"):
                raise
