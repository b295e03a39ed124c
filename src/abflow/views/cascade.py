"""The cascade as a picture (``abflow cascade --svg FILE``), without graphviz.

One column per level of the cascade (level 1 on the left: ABs that need no other AB), one box
per AB with its name and what it makes (RAW_TYPE, recipe, detectors), an arrow from each AB to
every AB that takes a calibration from it, and a tooltip per AB (its parents and children).
The SVG is written by hand: plain text, searchable, and readable in any browser.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

from abflow.model.night import Night

BOX_H, ROW_H, COL_GAP, MARGIN, CHAR_W = 34, 44, 70, 20, 6.7
PALETTE = (
    "#4c72b0",
    "#dd8452",
    "#55a868",
    "#c44e52",
    "#8172b2",
    "#937860",
    "#da8bc3",
    "#8c8c8c",
    "#ccb974",
    "#64b5cd",
)


def _attr(text: str) -> str:
    return escape(text, {'"': "&quot;"})


def _positions(night: Night) -> tuple[dict[str, tuple[float, float]], float, float, float]:
    """Top-left corner of every AB's box, the box width, and the picture's size."""
    levels = night.levels()
    longest = max((len(r.name) for r in night), default=10)
    box_w = longest * CHAR_W + 16
    where: dict[str, tuple[float, float]] = {}
    for k, level in enumerate(levels):
        for i, ab in enumerate(level):
            where[ab] = (MARGIN + k * (box_w + COL_GAP), MARGIN + 24 + i * ROW_H)
    width = MARGIN * 2 + len(levels) * (box_w + COL_GAP) - COL_GAP
    height = MARGIN * 2 + 24 + max((len(level) for level in levels), default=0) * ROW_H
    return where, box_w, width, height


def _box(night: Night, ab: str, x: float, y: float, w: float, colour: str) -> list[str]:
    record = night[ab]
    what = record.ab.raw_type.lower() or "ab"
    dets = night.detectors(ab)
    detail = f"{what}, {record.ab.recipe or 'no recipe'}" + (
        f", {dets} detectors" if dets > 1 else ""
    )
    tip = (
        f"{ab}\n{detail}\nlevel {record.level}"
        + (f"\nneeds: {', '.join(record.parents)}" if record.parents else "")
        + (f"\nfeeds: {', '.join(record.children)}" if record.children else "")
    )
    return [
        f'<g class="ab" id="ab-{_attr(ab)}"><title>{escape(tip)}</title>',
        f'<rect x="{x:.0f}" y="{y:.0f}" width="{w:.0f}" height="{BOX_H}" rx="5" '
        f'fill="white" stroke="{colour}" stroke-width="2"/>',
        f'<text x="{x + 8:.0f}" y="{y + 14:.0f}" font-size="11">{escape(ab)}</text>',
        f'<text x="{x + 8:.0f}" y="{y + 28:.0f}" font-size="10" fill="{colour}">'
        f"{escape(detail)}</text>",
        "</g>",
    ]


def cascade_svg(night: Night) -> str:
    """The night's cascade as an SVG document."""
    where, box_w, width, height = _positions(night)
    kinds = sorted({r.ab.raw_type.lower() for r in night})
    colour = {kind: PALETTE[i % len(PALETTE)] for i, kind in enumerate(kinds)}
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'font-family="monospace">',
        f"<title>{escape(night.settings.batch_id)}: cascade of {len(night)} ABs</title>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" '
        'markerHeight="6" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#777"/></marker>'
        "</defs>",
    ]
    for k in range(len(night.levels())):
        x = MARGIN + k * (box_w + COL_GAP)
        out.append(
            f'<text x="{x:.0f}" y="{MARGIN + 10}" font-size="12" font-weight="bold">'
            f"level {k} ({len(night.levels()[k])} ABs)</text>"
        )
    links: dict[tuple[str, str], list[str]] = {}
    for edge in night.edges:
        links.setdefault((edge.parent, edge.child), []).append(edge.via)
    for (parent, child), via in links.items():
        (px, py), (cx, cy) = where[parent], where[child]
        x1, y1, x2, y2 = px + box_w, py + BOX_H / 2, cx, cy + BOX_H / 2
        mid = (x1 + x2) / 2
        tip = f"{child} takes {', '.join(via)} from {parent}"
        out.append(
            f'<path class="edge" d="M{x1:.0f},{y1:.0f} C{mid:.0f},{y1:.0f} {mid:.0f},'
            f'{y2:.0f} {x2:.0f},{y2:.0f}" fill="none" stroke="#777" '
            f'marker-end="url(#arrow)"><title>{escape(tip)}</title></path>'
        )
    for record in night:
        x, y = where[record.name]
        out += _box(night, record.name, x, y, box_w, colour[record.ab.raw_type.lower()])
    out.append("</svg>")
    return "\n".join(out) + "\n"
