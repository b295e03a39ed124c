"""Test double for a pipeline or QC command (not a product path): logs when it runs.

    python standin_job.py LOG AB_FILE [--seconds S] [--seconds-if NAME=S ...] [--check-raw]
                          [--fail-if NAME] [--memory-mb M] [--memory-mb-if NAME=M ...]

Appends ``start <AB> <t>`` and ``end <AB> <t>`` lines to LOG (O_APPEND, one write per line),
sleeps S seconds in between (the S of the first --seconds-if whose NAME is in the AB name,
else --seconds), and with --check-raw fails unless every RAWFILE of the AB exists
(expanded from the $DFO_* variables the job gets). Exits 3 when the AB name contains NAME.
With --memory-mb it holds M MB of memory (touched, so resident) while it sleeps (the M of the
first --memory-mb-if whose NAME is in the AB name, if any).
Ended by SIGTERM (abflow or HTCondor ending the job), it appends ``killed <AB> <t>`` first.
"""

import argparse
import os
import signal
import sys
import time

from abflow.model.ab import read_ab


def note(log: str, text: str) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, f"{text} {time.time():.6f}\n".encode())
    finally:
        os.close(fd)


def for_name(items: list[str], name: str, default: float) -> str | float:
    """The value of the first ``NAME=VALUE`` item whose NAME is in ``name``, else ``default``."""
    for item in items:
        part, _, value = item.rpartition("=")
        if part in name:
            return value
    return default


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("log")
    parser.add_argument("ab_file")
    parser.add_argument("--seconds", type=float, default=0.0)
    parser.add_argument("--seconds-if", action="append", default=[], metavar="NAME=S")
    parser.add_argument("--check-raw", action="store_true")
    parser.add_argument("--fail-if", default="")
    parser.add_argument("--memory-mb", type=int, default=0)
    parser.add_argument("--memory-mb-if", action="append", default=[], metavar="NAME=M")
    args = parser.parse_args()
    name = os.path.basename(args.ab_file)

    def killed(signum: int, _frame: object) -> None:
        note(args.log, f"killed {name}")
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, killed)
    note(args.log, f"start {name}")
    if args.check_raw:
        ab, problems = read_ab(args.ab_file)
        missing = [f.path for f in ab.rawfiles if not os.path.isfile(f.path)]
        if problems or missing:
            print(f"standin: missing raw files {missing} {problems}", file=sys.stderr)
            return 4
    seconds = float(for_name(args.seconds_if, name, args.seconds))
    memory = int(for_name(args.memory_mb_if, name, args.memory_mb))
    held = bytearray(memory * 2**20)
    for i in range(0, len(held), 4096):
        held[i] = 1
    time.sleep(seconds)
    note(args.log, f"end {name}")
    if args.fail_if and args.fail_if in name:
        print(f"standin: failing {name} on purpose", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
