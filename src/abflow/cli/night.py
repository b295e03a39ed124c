"""``abflow check``, ``abflow cascade`` and ``abflow plan``: the night before it runs."""

from __future__ import annotations

import argparse
import json
import sys

from abflow.cli.common import Parents, add_command, configuration_source, night_of, settings_of
from abflow.model.load import load_night
from abflow.state.text import inert


def register(sub: argparse._SubParsersAction, parents: Parents) -> None:
    """Add the commands of this module."""
    both = [parents.config, parents.night]
    add_command(sub, "check", cmd_check, both, help="validate the configuration and the night")
    p = add_command(
        sub, "cascade", cmd_cascade, both, help="print the cascade as levels with counts"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--brief", action="store_true", help="counts per level only")
    p.add_argument(
        "--svg",
        metavar="FILE",
        help="also draw the cascade as an SVG picture into FILE (no graphviz needed)",
    )
    p = add_command(
        sub,
        "plan",
        cmd_plan,
        both,
        help="critical path and predicted makespan of the night for several slot counts",
    )
    p.add_argument("--slots", type=int, nargs="+", metavar="N", help="slot counts (1 2 4 8)")
    p.add_argument(
        "--from-history",
        action="store_true",
        help="durations from earlier runs (records of the same ABs or recipes), in seconds",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")


def cmd_check(args: argparse.Namespace) -> int:
    """Validate the configuration and the night; print the problems or a one-line summary."""
    settings = settings_of(args)
    night = load_night(settings)
    print(f"configuration: {configuration_source(args)}")
    for key, source in sorted(settings.sources.items()):
        print(f"{key} = {_config_value(settings.raw, key)} (from {source})")
    for note in settings.notes:
        print(inert(f"note: {note}"))
    for warning in night.warnings:
        print(inert(f"warning: {warning}"), file=sys.stderr)
    print(
        f"{settings.batch_id}: {len(night)} ABs, "
        f"{night.dependencies()} dependencies, "
        f"{len(night.levels())} levels: OK"
    )
    return 0


def _config_value(config: dict, dotted: str) -> object:
    node: object = config
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def cmd_cascade(args: argparse.Namespace) -> int:
    """Print the cascade as levels (which ABs can run together) with counts."""
    from abflow.model.plan import cascade_summary, format_cascade

    night = night_of(args)
    if args.json:
        print(json.dumps(cascade_summary(night), indent=2))
    else:
        print(format_cascade(night, verbose=not args.brief))
    if args.svg:
        from abflow.state.fsutil import atomic_write_text
        from abflow.views.cascade import cascade_svg

        atomic_write_text(args.svg, cascade_svg(night))
        print(
            f"wrote {args.svg}: {len(night)} ABs, {night.dependencies()} dependencies",
            file=sys.stderr if args.json else sys.stdout,
        )
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    """Print the cascade levels, the critical path and predicted makespans per slot count."""
    from abflow.model.plan import format_plan, plan_night
    from abflow.views.history import history_durations

    night = night_of(args)
    unreadable: list[str] = []
    history = history_durations(night, unreadable) if args.from_history else (None, 0)
    if unreadable:
        left = inert("; ".join(unreadable), line=True)
        print(
            f"abflow plan: note: {len(unreadable)} completion record(s) left out, they "
            f"cannot be read: {left}",
            file=sys.stderr,
        )
    plan = plan_night(night, args.slots or [1, 2, 4, 8], *history)
    print(json.dumps(plan, indent=2) if args.json else format_plan(plan))
    return 0
