"""The Cost section: the running kernel's struct layouts (lock fields
highlighted), slab packing and the system bill (:mod:`pervma.layout.api`), and
the configs the linux-mm thread discusses before and after the series
(:mod:`pervma.layout.configs`, the same table as ``pervma cost --configs``)."""

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
                "bytes_per_vma", "pages_per_1000", "doc"]
# The bill priced on the VMAs alive now: it follows the system, so it goes to
# timings.csv (rows "system bill"), not to cost-variants.csv.
LIVE_BILL_COLUMNS = ("pages", "bytes", "delta_pages", "delta_bytes")
CONFIG_COLUMNS = ["key", "arch", "thread_sizeof", "sizeof_before", "sizeof_after",
                  "slab_size_before", "slab_size_after", "objs_per_slab_before",
                  "objs_per_slab_after", "pages_per_10000_before", "pages_per_10000_after",
                  "pages_per_10000_difference", "mm_shift_before", "mm_shift_after",
                  "mm_sizeof_delta_before", "mm_sizeof_delta_after", "mm_struct_btf_sizeof",
                  "mm_struct_btf_delta", "slab_cpus", "options", "source", "check"]


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
            head = _layout_head(struct, lay)
            summ = H.tag("summary", head)
            inner = H.join([summ, _layout_table(rows), H.link(f"layout-{struct}.csv", "CSV")])
            sec.add(H.Raw(f"<details{' open' if open_ else ''}>{inner.html}</details>"))
            sec.summary.append(_lock_summary(struct, lay, rows))
    with sec.guard("system bill"):
        bill = api.system_bill(btf_path)
        _render_bill(sec, bill)
    with sec.guard("configs of the thread"):
        from pervma.layout import configs

        _render_configs(sec, configs.table(_machine_cpus(), 64, btf_path))
    return sec


def _machine_cpus() -> int:
    from pervma.host import proc

    return proc.read_machine().present_cpus


def _slab_align(struct: str) -> int | None:
    from pervma.host import proc

    try:
        return int((proc.SLAB_SYSFS / struct / "align").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _layout_head(struct: str, lay: dict[str, Any]) -> str:
    """What ``pervma layout STRUCT`` says about holes, padding and alignment
    (holes and tail padding of nested anonymous structs included)."""
    holes = lay.get("holes", [])
    nested = sum(p["size"] for p in lay.get("nested_padding", []))
    head = (f"struct {struct}: {lay['size']} bytes, alignment {lay['align']}, "
            f"{sum(h['size'] for h in holes)} bytes in {len(holes)} holes, "
            f"{lay.get('padding', 0)} bytes of tail padding")
    if nested:
        head += f", {nested} bytes of padding inside nested structs"
    slab = _slab_align(struct)
    if slab is not None:
        head += f"; slab cache align {slab} (/sys/kernel/slab/{struct}/align)"
    return head


def _bar_values(ax: Any, bars: Any, fmt: str = "{:g}") -> None:
    ax.bar_label(bars, labels=[fmt.format(b.get_height()) for b in bars], fontsize=7,
                 padding=2)


def _bill_plot(variants: list[dict[str, Any]]) -> str:
    """Bytes per VMA by variant, each bar labelled with its value."""
    from pervma.report.plots import plt, svg

    fig, ax = plt.subplots(figsize=(7.0, 3.6))
    ys = [float(r["bytes_per_vma"]) for r in variants]
    bars = ax.bar(range(len(variants)), ys, 0.6, color="#4c72b0")
    _bar_values(ax, bars)
    ax.set_xticks(range(len(variants)))
    ax.set_xticklabels([r["name"] for r in variants], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("bytes of slab page per VMA")
    ax.set_ylim(0, max(ys) * 1.18)
    ax.set_title("vm_area_struct: slab bytes per VMA by layout variant")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return svg(fig)


def _configs_plot(rows: list[dict[str, Any]]) -> str:
    """sizeof and slab slot before/after the series per config, labelled bars;
    the legend sits below the axes, never over a bar."""
    from pervma.report.plots import plt, svg

    series = [("sizeof, 7.0 (gated)", lambda r: r["before"]["sizeof"], "#9ecae1"),
              ("sizeof, 7.0 + series", lambda r: r["after"]["sizeof"], "#3182bd"),
              ("slab slot, 7.0 + series", lambda r: r["after"]["slab"]["slab_size"],
               "#e6550d")]
    fig, ax = plt.subplots(figsize=(8.0, 4.2))
    width = 0.8 / len(series)
    top = 0
    for i, (name, get, color) in enumerate(series):
        xs = [x - 0.4 + width * (i + 0.5) for x in range(len(rows))]
        ys = [get(r) for r in rows]
        top = max(top, *ys)
        _bar_values(ax, ax.bar(xs, ys, width, label=name, color=color))
    marked = False
    for x, r in enumerate(rows):
        if r["thread_sizeof"]:
            ax.plot([x - 0.4, x - 0.4 + width], [r["thread_sizeof"]] * 2, color="k", lw=1.5,
                    label=None if marked else "size the thread states")
            marked = True
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([r["key"] for r in rows], rotation=15, ha="right", fontsize=8)
    ax.set_ylabel("bytes per vm_area_struct")
    ax.set_ylim(0, top * 1.15)
    ax.set_title("vm_area_struct before and after the series, per config")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.32), ncol=4,
              frameon=False)
    fig.tight_layout()
    return svg(fig)


def _mm_cell(d: dict[str, Any]) -> str:
    if d["sizeof"] is not None:
        return str(d["sizeof"])
    lo, hi = d["sizeof_range"]
    return f"{lo} or {hi}"


def configs_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CONFIG_COLUMNS)
    for r in rows:
        b, a, btf = r["before"], r["after"], r.get("btf", {})
        w.writerow([r["key"], r["arch"], r["thread_sizeof"] or "", b["sizeof"], a["sizeof"],
                    b["slab"]["slab_size"], a["slab"]["slab_size"],
                    b["slab"]["objs_per_slab"], a["slab"]["objs_per_slab"],
                    b["slab"]["pages_per_10000"], a["slab"]["pages_per_10000"],
                    r["difference"]["pages_per_10000"],
                    b["mm_struct_delta"]["shift"], a["mm_struct_delta"]["shift"],
                    _mm_cell(b["mm_struct_delta"]), _mm_cell(a["mm_struct_delta"]),
                    btf.get("mm_struct_sizeof", ""), btf.get("mm_struct_delta", ""),
                    r["slab_cpus"], " ".join(k for k in r["options"]), r["source"],
                    "; ".join(r["check"])])
    return buf.getvalue()


def _render_configs(sec: Section, t: dict[str, Any]) -> None:
    rows = t["configs"]
    sec.add(H.tag("h3", "The configs of the linux-mm thread, before and after the series"))
    sec.add(H.tag("p", (
        f"vm_area_struct on Linux {t['before']} (lock fields only with PER_VMA_LOCK, which "
        f"needs SMP and ARCH_SUPPORTS_PER_VMA_LOCK) and on {t['after']} (fields in every "
        "config; vm_refcnt stays ____cacheline_aligned_in_smp, so it is not aligned "
        "without SMP). Computed by the layout engine from each config's Kconfig values "
        "(pervma cost --configs); the thread's numbers are a separate column. Cells "
        "'a / b' are 7.0 / 7.0 with the series. Slab: "
        "SLAB_HWCACHE_ALIGN | SLAB_TYPESAFE_BY_RCU with the free pointer inside the "
        f"object, {t['cache_line']} B cache line, {t['cpus']} CPUs for SMP configs and 1 "
        f"without, pages per {t['per_vmas']:,} VMAs. mm Δ: bytes vma_writer_wait and "
        "mm_lock_seq push the rest of mm_struct by; mm sizeof Δ: what they add to "
        "sizeof(struct mm_struct) (two values where it depends on tail padding that only "
        "BTF knows; the running kernel's from its BTF).")))
    body, classes = [], []
    for r in rows:
        b, a, btf = r["before"], r["after"], r.get("btf", {})
        mm_before, mm_after = _mm_cell(b["mm_struct_delta"]), _mm_cell(a["mm_struct_delta"])
        if "mm_struct_delta" in btf and b["per_vma_lock"]:
            # the running kernel already has the fields: BTF gives the exact growth
            mm_before = mm_after = (f"{btf['mm_struct_delta']} (BTF, sizeof "
                                    f"{btf['mm_struct_sizeof']})")
        body.append([r["title"], r["thread_sizeof"] or "", b["sizeof"], a["sizeof"],
                     f"{b['slab']['slab_size']} / {a['slab']['slab_size']}",
                     f"{b['slab']['objs_per_slab']} / {a['slab']['objs_per_slab']}",
                     f"{b['slab']['pages_per_10000']} / {a['slab']['pages_per_10000']}",
                     r["difference"]["pages_per_10000"],
                     f"{b['mm_struct_delta']['shift']} / {a['mm_struct_delta']['shift']}",
                     f"{mm_before} / {mm_after}",
                     "; ".join(r["check"])])
        classes.append("lock" if r["key"] == "running" else None)
    sec.add(H.table(["config", "thread (B)", "sizeof 7.0", "sizeof +series",
                     "slab slot", "per slab", f"pages/{t['per_vmas']:,} VMAs", "Δ pages",
                     "mm Δ", "mm sizeof Δ", "checked"], body, classes))
    sec.csv["cost-configs.csv"] = configs_csv(rows)
    sec.add(H.link("cost-configs.csv", "CSV"))
    sec.add(H.tag("ul", H.join(
        H.tag("li", f"{r['key']}: {', '.join(r['options'])}; from {r['source']}")
        for r in rows)))
    sec.add(H.tag("p", "Kconfig symbols that change these structs: " + "; ".join(
        f"{k}: {v}" for k, v in t["symbols"].items())))
    for s in t["skipped"]:
        sec.fail("configs", s)
    sec.add(H.inline_svg(_configs_plot(rows), (
        "Bars: light blue = sizeof(struct vm_area_struct) on 7.0 (per-VMA lock gated), "
        "dark blue = on 7.0 with the series, orange = its slab slot after the series "
        "(SLAB_HWCACHE_ALIGN rounds to 64 B); numbers on bars are bytes; a black tick "
        "over the light-blue bar marks the size the thread states (68/192/256 B).")))
    sec.summary.append("configs: " + "; ".join(
        f"{r['key']} {r['before']['sizeof']}>{r['after']['sizeof']} B "
        f"({r['difference']['pages_per_10000']:+} pages/{t['per_vmas']})" for r in rows))


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
    sec.moment.append(("system bill", "VMAs alive", str(v["maps"])))
    sec.moment += [("system bill", f"{r['name']}.{c}", str(r.get(c, "")))
                   for r in variants for c in LIVE_BILL_COLUMNS]
    sec.add(H.link("cost-variants.csv", "CSV"))
    sec.add(H.inline_svg(_bill_plot(variants), (
        "Bytes of slab page each VMA costs in the vm_area_struct cache (page size x 2^order "
        "/ objects per slab), labelled on each bar; variants: " + "; ".join(
            f"{r['name']} = {r['doc']}" for r in variants))))
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
