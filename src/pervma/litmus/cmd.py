"""``pervma litmus``: run C litmus tests under the Linux-kernel memory model."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pervma import cliargs

EPILOG = """\
examples (paths in pervma's source tree):
  pervma litmus tests/litmus/lkmm/MP+pooncerelease+poacquireonce.litmus
  pervma litmus --check-result tests/litmus/lkmm/SB+poonceonces.litmus tests/litmus/doc/RM-broken.litmus

The output is herd7's (States, Ok/No, Witnesses, Condition and the line
'Observation <name> <Never|Sometimes|Always> <positive> <negative>') without its
Time and Hash lines.  The model is tools/memory-model/linux-kernel.cat (Linux 7.0).

exit status: 0 done (whatever the verdict), 1 with --check-result when a verdict
differs from the file's 'Result:' line, 2 a file that cannot be read or parsed
(one line naming the construct), 70 internal error, 130 interrupted."""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "litmus", help="run C litmus tests under the Linux-kernel memory model (herd7-style)",
        description="Enumerate the candidate executions of C litmus tests in herd7's syntax "
        "and keep those the Linux-kernel memory model (LKMM) allows; print the outcome "
        "as herd7 does.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", metavar="FILE", type=cliargs.nonempty,
                   help="a .litmus file (C, herd7 syntax)")
    p.add_argument("--check-result", action="store_true",
                   help="compare each verdict with the file's 'Result:' line; exit 1 on "
                   "a mismatch")
    p.set_defaults(func=cmd_litmus)


def cmd_litmus(args: argparse.Namespace) -> int:
    from pervma.litmus import litmus_file

    mismatches = 0
    for i, path in enumerate(args.files):
        lit, out, text = litmus_file(path)
        if i:
            sys.stdout.write("\n")
        sys.stdout.write(text)
        if args.check_result and lit.expected is not None:
            expected = lit.expected
            got = out.verdict
            if expected == "DEADLOCK":
                ok = out.positive == out.negative == 0
            else:
                ok = got == expected
            if not ok:
                mismatches += 1
                sys.stderr.write(f"pervma: {path}: Result: {expected}, but LKMM says "
                                 f"{got}\n")
    sys.stdout.flush()
    return 1 if mismatches else 0
