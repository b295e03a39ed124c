"""Test double for a site's processAB (not a pipeline): what happens to an AB's products.

    python recipe_standin.py AB_FILE PLAN LOG

PLAN is a JSON file mapping AB names to what the "recipe" does this time (default ``ok``):
``ok`` writes every PRODUCTS file as a complete FITS file, ``nothing`` exits 0 and writes
nothing, ``empty`` writes empty products and exits 0, ``truncated`` writes the first half of
each and exits 0, ``killed`` writes the first half of the first product and kills itself
(SIGKILL), ``fail`` exits 1. Every product it writes carries this attempt's token (a random
hex string) in its header; LOG gets ``<AB> <token> <mode>`` when it starts (one O_APPEND
write), so a test can tell which attempt wrote a product.
"""

import json
import os
import signal
import sys
import uuid

from abflow.model.ab import read_ab


def fits_bytes(token: str) -> bytes:
    cards = [f"SIMPLE  = {'T':>20}", f"TOKEN   = '{token}'", "END"]
    header = "".join(c.ljust(80) for c in cards).ljust(2880)
    return header.encode() + bytes(2880)


def main(ab_file: str, plan_file: str, log: str) -> int:
    name = os.path.basename(ab_file)
    with open(plan_file) as fh:
        mode = json.load(fh).get(name, "ok")
    token = uuid.uuid4().hex
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(fd, f"{name} {token} {mode}\n".encode())
    os.close(fd)
    if mode == "fail":
        return 1
    ab, _problems = read_ab(ab_file)
    data = fits_bytes(token)
    for i, frame in enumerate(ab.products):
        if mode == "nothing":
            break
        os.makedirs(os.path.dirname(frame.path), exist_ok=True)
        with open(frame.path, "wb") as fh:
            cut = {"empty": b"", "truncated": data[:4000], "killed": data[:4000]}
            fh.write(cut.get(mode, data))
        if mode == "killed" and i == 0:
            os.kill(os.getpid(), signal.SIGKILL)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
