"""The Cost section: the running kernel's struct layouts (lock fields
highlighted), slab packing and the system bill, all from :mod:`pervma.layout.api`."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import Any

from pervma.report import html as H
from pervma.report.section import Section

VMA_LOCK_FIELDS = ("vm_lock_seq", "vm_refcnt", "vmlock_dep_map", "detached", "vm_lock")
MM_LOCK_FIELDS = ("mm_lock_seq", "vma_writer_wait", "mmap_lock")

LAYOUT_COLUMNS = ["depth", "name", "type", "offset", "size", "bit_offset", "bitfield_size",
                  "lock"]
BILL_COLUMNS = ["name", "sizeof", "align", "slab_size", "objs_per_slab", "order",
                "bytes_per_vma", "pages", "bytes", "delta_pages", "delta_bytes",
                "pages_per_1000", "doc"]


def _member_rows(m: dict[str, Any], depth: int, locks: set[str]) -> list[dict[str, Any]]:
    row = {"depth": depth, "name": m.get("name"), "type": m.get("type"),
           "offset": m.get("offset"), "size": m.get("size"), "bit_offset": m.get("bit_offset"),
           "bitfield_size": m.get("bitfield_size"), "lock": m.get("name") in locks,
           "kind": "member"}
    out = [row]
    for sub in m.get("members") or []:
        out += _member_rows(sub, depth + 1, locks)
    return out


def _gap_row(offset: int, size: int, what: str, depth: int) -> dict[str, Any]:
    return {"depth": depth, "name": None, "type": what, "offset": offset, "size": size,
            "bit_offset": offset * 8, "bitfield_size": 0, "lock": False, "kind": "hole"}


def flatten(layout: dict[str, Any], locks: Iterable[str]) -> list[dict[str, Any]]:
    """Members in declaration order (nested ones indented after their parent),
    with every hole and every nested struct's tail padding placed right after
    the member it follows, as ``pahole -C`` prints them; the struct's own tail
    padding last."""
    lock_set = set(locks)
    out: list[dict[str, Any]] = []
    for m in layout.get("members", []):
        out += _member_rows(m, 0, lock_set)
    gaps = [(h, "hole") for h in layout.get("holes", [])]
    gaps += [(h, "padding") for h in layout.get("nested_padding", [])]
    for h, what in sorted(gaps, key=lambda g: g[0]["offset"]):
        at = len(out)
        for i in range(len(out) - 1, -1, -1):
            r = out[i]
            if r["kind"] == "member" and r["offset"] + (r["size"] or 0) == h["offset"]:
                at = i + 1
                while at < len(out) and out[at]["kind"] == "hole" and \
                        out[at]["offset"] <= h["offset"]:
                    at += 1
                break
        depth = out[at - 1]["depth"] if 0 < at <= len(out) else 0
        out.insert(at, _gap_row(h["offset"], h["size"], what, depth))
    pad = layout.get("padding", 0)
    if pad:
        out.append(_gap_row(layout["size"] - pad, pad, "padding", 0))
    return out


def layout_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(LAYOUT_COLUMNS)
    for r in rows:
        w.writerow(["" if r[c] is None else r[c] for c in LAYOUT_COLUMNS])
    return buf.getvalue()


def bill_csv(variants: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(BILL_COLUMNS)
    for v in variants:
        w.writerow([v.get(c, "") for c in BILL_COLUMNS])
    return buf.getvalue()


def _layout_table(rows: list[dict[str, Any]]) -> H.Raw:
    body, classes = [], []
    for r in rows:
        name = r["name"] if r["name"] is not None else ("(anonymous)" if r["kind"] == "member"
                                                       else f"/* {r['type']} */")
        indent = "\u00a0\u00a0\u00a0\u00a0" * r["depth"]
        bits = f"{r['bit_offset'] % 8}:{r['bitfield_size']}" if r["bitfield_size"] else ""
        body.append([indent + name, "" if r["kind"] == "hole" else r["type"], r["offset"],
                     r["size"], bits, "lock" if r["lock"] else ""])
        classes.append("lock" if r["lock"] else "hole" if r["kind"] == "hole" else None)
    return H.table(["member", "type", "offset", "size", "bits", ""], body, classes)


def _lock_summary(name: str, layout: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    locks = [r for r in rows if r["lock"]]
    what = ", ".join(f"{r['name']} {r['size']} B @{r['offset']}" for r in locks) or "none"
    return f"{name}: {layout['size']} B, align {layout['align']}; lock fields: {what}"


def build(btf_path: str | None = None) -> Section:
    sec = Section("cost", "Cost: what the per-VMA lock fields cost in memory")
    from pervma.layout import api

    sec.add(H.tag("p", "The running kernel's layouts come from its BTF "
                  "(pervma layout STRUCT --json); slab packing and the bill from the SLUB "
                  "model and /proc (pervma cost --json). Lock fields are highlighted."))
    for struct, locks, open_ in (("vm_area_struct", VMA_LOCK_FIELDS, True),
                                 ("mm_struct", MM_LOCK_FIELDS, False)):
        with sec.guard(f"{struct} layout"):
            lay = api.running_layout(struct, btf_path)
            rows = flatten(lay, locks)
            sec.csv[f"layout-{struct}.csv"] = layout_csv(rows)
            head = (f"struct {struct}: {lay['size']} bytes, alignment {lay['align']}, "
                    f"{sum(h['size'] for h in lay.get('holes', []))} bytes in holes, "
                    f"{lay.get('padding', 0)} bytes of tail padding")
            summ = H.tag("summary", head)
            inner = H.join([summ, _layout_table(rows), H.link(f"layout-{struct}.csv", "CSV")])
            sec.add(H.Raw(f"<details{' open' if open_ else ''}>{inner.html}</details>"))
            sec.summary.append(_lock_summary(struct, lay, rows))
    with sec.guard("system bill"):
        bill = api.system_bill(btf_path)
        _render_bill(sec, bill)
    return sec


def _render_bill(sec: Section, bill: dict[str, Any]) -> None:
    v = bill["vmas"]
    sec.add(H.tag("h3", "Slab packing and the system bill"))
    facts = [f"VMAs alive: {v['maps']} in /proc/*/maps ({v['processes']} processes, "
             f"{v['gate']} [vsyscall] gate lines not counted)"]
    if "slabinfo_active" in v:
        facts.append(f"/proc/slabinfo vm_area_struct: {v['slabinfo_active']} active of "
                     f"{v['slabinfo_total']} slots, {v['pages_held']} pages held")
    facts.append(str(v.get("explanation", "")))
    facts.append("lock fields in vm_area_struct: " + (", ".join(bill["lock_fields"]) or "none"))
    sec.add(H.tag("ul", H.join(H.tag("li", f) for f in facts)))
    variants = bill["variants"]
    rows = [[r["name"], r["sizeof"], r["slab_size"], r["objs_per_slab"], r["order"],
             r["bytes_per_vma"], r["pages"], r["bytes"], r["delta_bytes"], r["pages_per_1000"],
             r["doc"]] for r in variants]
    sec.add(H.table(["variant", "sizeof", "slot", "per slab", "order", "B/VMA", "pages",
                     "bytes", "Δ bytes", "pages/1000 VMAs", "what"], rows,
                    ["lock" if r["name"] == "running" else None for r in variants]))
    sec.csv["cost-variants.csv"] = bill_csv(variants)
    sec.add(H.link("cost-variants.csv", "CSV"))
    from pervma.report.plots import bars

    labels = [r["name"] for r in variants]
    sec.add(H.inline_svg(bars(labels, {"bytes per VMA (slab slot share)":
                                       [float(r["bytes_per_vma"]) for r in variants]},
                              "bytes per VMA", "vm_area_struct: bytes per VMA by variant"),
                         "Bytes each VMA costs in the vm_area_struct cache, per layout variant"))
    mm = bill.get("mm_struct", {})
    if "error" in mm:
        sec.fail("mm_struct bill", str(mm["error"]))
    elif "running" in mm:
        g = mm.get("gated", mm["running"])
        line = (f"mm_struct: {mm['sizeof']} B (+{mm['extra_object_bytes']} B cpumask/cid) -> "
                f"{mm['running']['slab_size']} B slot, {mm['running']['objs_per_slab']}/slab; "
                f"without {', '.join(mm['lock_fields']) or 'lock fields'}: {g['sizeof']} B -> "
                f"{g['slab_size']} B slot; for {mm['processes']} processes "
                f"{mm['running']['pages']} vs {g['pages']} pages")
        sec.add(H.tag("p", line))
        sec.summary.append(line)
    by = {r["name"]: r for r in variants}
    run = by["running"]
    parts = [f"{n} {by[n]['bytes_per_vma']} B/VMA ({by[n]['delta_bytes']:+} B total)"
             for n in ("gated", "smp_off", "lockdep", "v6.14") if n in by]
    sec.summary.append(f"{v['maps']} VMAs: running {run['bytes_per_vma']} B/VMA, "
                       f"{run['pages']} pages; " + "; ".join(parts))
