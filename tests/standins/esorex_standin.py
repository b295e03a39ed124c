"""Test double for esorex (not a pipeline): writes FITS products of chosen sizes.

    python esorex_standin.py --output-dir=D --output-prefix=P ... RECIPE [options] SOF

Writes one product per entry of $STANDIN_PRODUCTS (``TAG:BYTES,TAG:BYTES``, in order) as
``D/P_000N.fits``: a FITS file whose primary header carries ``ESO PRO CATG = TAG`` and whose
data fill it to about BYTES (whole 2,880-byte blocks). Exits 0, or 1 if the SOF is missing.
"""

import os
import sys

import numpy as np
from astropy.io import fits


def main(argv: list[str]) -> int:
    options = dict(a.split("=", 1) for a in argv if a.startswith("--") and "=" in a)
    sof = argv[-1]
    if not os.path.isfile(sof):
        print(f"esorex stand-in: no SOF {sof}", file=sys.stderr)
        return 1
    outdir, prefix = options["--output-dir"], options["--output-prefix"]
    for i, item in enumerate(os.environ.get("STANDIN_PRODUCTS", "").split(",")):
        tag, _, size = item.partition(":")
        hdu = fits.PrimaryHDU(np.zeros(max(int(size) // 4, 1), dtype=np.float32))
        hdu.header["HIERARCH ESO PRO CATG"] = tag
        hdu.writeto(os.path.join(outdir, f"{prefix}_{i:04d}.fits"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
