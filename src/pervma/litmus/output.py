"""herd7's report of a litmus test: the states, Ok/No, the witnesses, the flags,
the condition and the ``Observation`` verdict line (herd's ``Time`` and ``Hash``
lines are left out: they vary from run to run)."""

from __future__ import annotations

from pervma.litmus.executions import Outcome
from pervma.litmus.syntax import Litmus, key_str, prop_str

KIND = {"exists": "Allowed", "~exists": "Forbidden", "forall": "Required"}


def validated(lit: Litmus, out: Outcome) -> bool:
    """herd's Ok/No: whether the quantified condition holds."""
    if lit.quantifier == "exists":
        return out.positive > 0
    if lit.quantifier == "~exists":
        return out.positive == 0
    return out.negative == 0


def format_outcome(lit: Litmus, out: Outcome) -> str:
    lines = [f"Test {lit.name} {KIND[lit.quantifier]}", f"States {len(out.states)}"]
    for state in out.states:
        lines.append(" ".join(f"{key_str(k)}={v};" for k, v in state))
    lines.append("Ok" if validated(lit, out) else "No")
    lines.append("Witnesses")
    lines.append(f"Positive: {out.positive} Negative: {out.negative}")
    for flag in sorted(out.flags):
        lines.append(f"Flag {flag}")
    lines.append(f"Condition {lit.quantifier} ({prop_str(lit.prop)})")
    lines.append(f"Observation {lit.name} {out.verdict} {out.positive} {out.negative}")
    return "\n".join(lines) + "\n"
