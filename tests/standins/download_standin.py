"""Test double for ngasClient (not an archive client): writes a file, when told to.

    python download_standin.py FILE DEST CONTROL

Creates ``CONTROL/started.<basename of FILE>.<pid>``, waits while ``CONTROL/hold`` exists and
``CONTROL/release`` does not, then writes ``data <FILE> <pid>`` to DEST and exits 0 (1 if
``CONTROL/fail`` exists, after waiting).
"""

import os
import sys
import time


def main(name: str, dest: str, control: str) -> int:
    base = os.path.basename(name)
    open(os.path.join(control, f"started.{base}.{os.getpid()}"), "w").close()
    while os.path.exists(os.path.join(control, "hold")) and not os.path.exists(
        os.path.join(control, "release")
    ):
        time.sleep(0.05)
    if os.path.exists(os.path.join(control, "fail")):
        return 1
    with open(dest, "w") as fh:
        fh.write(f"data {name} {os.getpid()}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
