"""abflow's processQC for the example night: QC1 numbers, a PAF file and a PNG report per AB.

For every image product of a processed AB (its PRODUCTS entries, at their final paths) the QC
computes: median level, robust noise (1.4826 x median absolute deviation), mean, and the number
of hot pixels (more than ``HOT_SIGMA`` robust sigmas above the median). The numbers go to a PAF
file (ESO parameter file syntax) and a PNG report in ``<log_dir>/<DATE>/``, and to
``$ABFLOW_RESULTS`` so that the AB's QC completion record carries them.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from astropy.io import fits

from abflow.model.ab import AB
from abflow.model.config import Settings
from abflow.state.fsutil import atomic_write_bytes, atomic_write_text

HOT_SIGMA = 10.0


class QCError(RuntimeError):
    """The QC of an AB could not be computed (missing or unreadable products)."""


@dataclass(frozen=True)
class ImageQC:
    """QC1 numbers of one image."""

    product: str
    catg: str
    extension: int
    median: float
    noise: float
    mean: float
    hot_pixels: int
    npix: int


def image_stats(data: np.ndarray) -> tuple[float, float, float, int]:
    """(median, robust noise, mean, hot pixel count) of the finite pixels of ``data``."""
    values = np.asarray(data, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise QCError("image has no finite pixels")
    median = float(np.median(values))
    noise = float(1.4826 * np.median(np.abs(values - median)))
    hot = int(np.count_nonzero(values > median + HOT_SIGMA * max(noise, 1e-12)))
    return median, noise, float(values.mean()), hot


def first_image(path: str) -> tuple[int, np.ndarray, fits.Header]:
    """(extension index, pixels, header) of the first HDU of ``path`` with a 2-d image (also
    of a tile-compressed ``.fits.fz``)."""
    try:
        with fits.open(path) as hdus:
            for index, hdu in enumerate(hdus):
                if hdu.is_image and hdu.header.get("NAXIS", 0) >= 2 and hdu.data is not None:
                    return index, np.array(hdu.data), hdu.header
    except (OSError, ValueError) as exc:
        raise QCError(f"{os.path.basename(path)} is not a readable FITS file: {exc}") from None
    raise QCError(f"{os.path.basename(path)} has no image")


def product_qc(path: str, catg: str) -> ImageQC:
    """QC1 numbers of one product file."""
    index, data, _ = first_image(path)
    median, noise, mean, hot = image_stats(data)
    return ImageQC(os.path.basename(path), catg, index, median, noise, mean, hot, int(data.size))


def paf_text(ab: AB, results: list[ImageQC], when: str) -> str:
    """The QC1 parameters in ESO PAF syntax (``KEY value ; # comment``)."""

    def card(key: str, value: object, comment: str = "") -> str:
        if isinstance(value, str):
            text = f'"{value}"'
        elif isinstance(value, float):
            text = f"{value:.4f}"
        else:
            text = str(value)
        return f"{key:<22} {text} ;" + (f" # {comment}" if comment else "")

    lines = [
        "PAF.HDR.START          ;",
        card("PAF.TYPE", "Quality Control Parameters"),
        card("PAF.ID", ab.name),
        card("PAF.NAME", f"{ab.name[: -len('.ab')]}_qc.paf"),
        card("PAF.DESC", "QC1 parameters written by abflow process-qc"),
        card("PAF.CRTE.NAME", "abflow"),
        card("PAF.CRTE.DAYTIM", when),
        "PAF.HDR.END            ;",
        "",
        card("QC.AB", ab.name),
        card("QC.RECIPE", ab.recipe),
        card("QC.RAW.TYPE", ab.raw_type),
    ]
    for i, r in enumerate(results, start=1):
        p = f"QC.PRO{i}"
        lines += [
            card(f"{p}.FILE", r.product),
            card(f"{p}.CATG", r.catg),
            card(f"{p}.MEDIAN", r.median, "median level [ADU]"),
            card(f"{p}.NOISE", r.noise, "1.4826 x MAD [ADU]"),
            card(f"{p}.MEAN", r.mean, "mean [ADU]"),
            card(f"{p}.NHOT", r.hot_pixels, f"pixels > median + {HOT_SIGMA:g} sigma"),
        ]
    return "\n".join(lines) + "\n"


MAX_PANELS = 4


def report_png(ab: AB, results: list[ImageQC], paths: dict[str, str]) -> bytes:
    """A small PNG report: each product as an image and a histogram, with its QC1 numbers.

    An AB with more than MAX_PANELS products (a multi-detector AB, e.g. 24 MUSE IFUs) gets its
    first product and one panel with median, noise and hot pixels per product instead.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = results if len(results) <= MAX_PANELS else results[:1]
    rows = max(len(shown), 1) + (1 if len(results) > MAX_PANELS else 0)
    fig, axes = plt.subplots(rows, 2, figsize=(9, 3.2 * rows), squeeze=False)
    for row, r in zip(axes, shown, strict=False):
        _, data, _ = first_image(paths[r.product])
        finite = data[np.isfinite(data)]
        lo, hi = np.percentile(finite, [1, 99]) if finite.size else (0, 1)
        row[0].imshow(data, origin="lower", cmap="gray", vmin=lo, vmax=hi, aspect="auto")
        row[0].set_title(f"{r.catg}: {r.product}", fontsize=8)
        row[0].set_xticks([])
        row[0].set_yticks([])
        row[1].hist(finite.ravel(), bins=100, range=(lo - 3 * r.noise, hi + 3 * r.noise))
        row[1].set_yscale("log")
        row[1].set_title(
            f"median {r.median:.4g}  noise {r.noise:.4g}  hot {r.hot_pixels}", fontsize=8
        )
    if len(results) > MAX_PANELS:
        index = np.arange(1, len(results) + 1)
        left, right = axes[-1]
        left.plot(index, [r.median for r in results], "o-", label="median")
        left.plot(index, [r.noise for r in results], "s-", label="noise")
        left.set_xlabel("product (detector)")
        left.legend(fontsize=7)
        right.bar(index, [r.hot_pixels for r in results])
        right.set_xlabel("product (detector)")
        right.set_title("hot pixels", fontsize=8)
    fig.suptitle(f"{ab.name}  {ab.recipe}  ({ab.raw_type})", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


def process_qc(
    ab: AB, settings: Settings, log: Callable[[str], None] | None = None
) -> dict[str, object]:
    """QC of one processed AB; writes the PAF and PNG, returns the results (JSON-ready)."""
    log = log or (lambda msg: print(f"[process-qc] {msg}", flush=True))
    if not ab.runs_recipe:
        log(f"{ab.name}: RECIPE {ab.recipe or 'none'}: no products, no QC")
        return {"ab": ab.name, "products": []}
    missing = [f.path for f in ab.products if not os.path.isfile(f.path)]
    if missing:
        raise QCError("product(s) missing, was the AB processed? " + ", ".join(missing))
    results: list[ImageQC] = []
    paths: dict[str, str] = {}
    for frame in ab.products:
        try:
            r = product_qc(frame.path, frame.tag)
        except QCError as exc:
            log(f"{os.path.basename(frame.path)}: {exc}, skipped")
            continue
        results.append(r)
        paths[r.product] = frame.path
        log(
            f"{r.product} {r.catg}: median {r.median:.3f} noise {r.noise:.3f} "
            f"hot {r.hot_pixels}/{r.npix}"
        )
    when = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    out_dir = os.path.join(settings.dfo["log_dir"], ab.date or settings.date)
    root = ab.name[: -len(".ab")]
    paf = os.path.join(out_dir, f"{root}_qc.paf")
    png = os.path.join(out_dir, f"{root}_qc.png")
    atomic_write_text(paf, paf_text(ab, results, when))
    atomic_write_bytes(png, report_png(ab, results, paths))
    log(f"wrote {paf} and {png}")
    out = {"ab": ab.name, "paf": paf, "png": png, "products": [asdict(r) for r in results]}
    results_file = os.environ.get("ABFLOW_RESULTS")
    if results_file:
        atomic_write_text(results_file, json.dumps(out, indent=2) + "\n")
    return out
