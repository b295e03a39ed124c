"""What every ``abflow`` subcommand shares: the configuration options, DFOS's ``-m``/``-d``,
and how a subcommand is registered (its parser beside its handler, in its own module)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from abflow.model.config import Settings, load_settings
from abflow.model.load import load_night
from abflow.model.night import Night

Handler = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Parents:
    """Argument groups subcommands take over: ``config`` (``--configfile``, ``--config``) and
    ``night`` (``-m MODE -d DATE``, as every DFOS tool takes them)."""

    config: argparse.ArgumentParser
    night: argparse.ArgumentParser


def make_parents() -> Parents:
    """The shared argument groups."""
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument(
        "--configfile", metavar="F", help="configuration file (default: config/config.yaml)"
    )
    config.add_argument(
        "--config",
        nargs="+",
        metavar="KEY=VALUE",
        help="override configuration keys, e.g. date=2013-02-12 limits.jobs=4",
    )
    night = argparse.ArgumentParser(add_help=False)
    night.add_argument("-d", "--date", help="DFO date (default: the configuration's)")
    night.add_argument("-m", "--mode", choices=["CALIB", "SCIENCE"], help="mode")
    return Parents(config, night)


def add_command(
    sub: argparse._SubParsersAction,
    name: str,
    handler: Handler,
    parents: list[argparse.ArgumentParser],
    **kwargs: str,
) -> argparse.ArgumentParser:
    """Register subcommand ``name``, run by ``handler``; return its parser for its options."""
    parser = sub.add_parser(name, parents=parents, **kwargs)
    parser.set_defaults(func=handler)
    return parser


def date_overrides(args: argparse.Namespace) -> list[str]:
    """``-d``/``-m`` as config overrides: one date (replacing any ``dates`` of the config)."""
    out = [f"date={args.date}", "dates=[]"] if getattr(args, "date", None) else []
    return out + ([f"mode={args.mode}"] if getattr(args, "mode", None) else [])


def configuration_source(args: argparse.Namespace) -> str:
    """Which configuration the command line means: the file named with --configfile, else
    what abflow.model.config.default_configfile chooses, said in words."""
    from abflow.model.config import default_configfile

    return str(args.configfile) if args.configfile else default_configfile()[1]


def settings_of(args: argparse.Namespace) -> Settings:
    """The validated configuration the command line names."""
    return load_settings(args.configfile, [*date_overrides(args), *(args.config or ())])


def night_of(args: argparse.Namespace) -> Night:
    """The night of the configuration the command line names."""
    return load_night(settings_of(args))
