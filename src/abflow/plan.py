"""The cascade as levels: which ABs can run together, and how wide the night is."""

from __future__ import annotations

from typing import Any

from abflow.night import Night


def cascade_summary(night: Night) -> dict[str, Any]:
    """Levels of the night with counts, as a JSON-ready dict."""
    levels = night.levels()
    return {
        "batch": night.settings.batch_id,
        "abs": len(night),
        "edges": len(night.edge_list),
        "levels": [
            {
                "level": k,
                "count": len(names),
                "abs": [
                    {
                        "ab": name,
                        "raw_type": night.ab_objects[name].raw_type,
                        "recipe": night.ab_objects[name].recipe,
                        "mef_factor": night.mef_factor(name),
                        "waits_for": list(night.parents[name]),
                    }
                    for name in names
                ],
            }
            for k, names in enumerate(levels)
        ],
        "max_width": max((len(lv) for lv in levels), default=0),
    }


def format_cascade(night: Night, verbose: bool = True) -> str:
    """The cascade as text: one block per level, each AB with raw type, recipe and parents."""
    summary = cascade_summary(night)
    lines = [
        f"{summary['batch']}: {summary['abs']} ABs, {summary['edges']} dependencies, "
        f"{len(summary['levels'])} levels, at most {summary['max_width']} ABs can run at once",
    ]
    for level in summary["levels"]:
        lines.append(
            f"level {level['level']}: {level['count']} AB{'s' if level['count'] != 1 else ''}"
        )
        if not verbose:
            continue
        width = max(len(a["ab"]) for a in level["abs"])
        for a in level["abs"]:
            waits = f"  <- {', '.join(a['waits_for'])}" if a["waits_for"] else ""
            mef = f"  x{a['mef_factor']} detectors" if a["mef_factor"] > 1 else ""
            lines.append(f"  {a['ab']:<{width}}  {a['raw_type']:<10} {a['recipe']}{mef}{waits}")
    return "\n".join(lines)
