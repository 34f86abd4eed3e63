"""The real-16core measurements (pfbench private/shared; see
/work/shared/anchors/real-16core/README.md), kept as data so the report can
overlay them: a 16-vCPU Firecracker guest, Linux 6.18.44, three repetitions
per point; the report uses the median."""

from __future__ import annotations

import csv
import io
import statistics

SOURCE = "real-16core: pfbench on Linux 6.18.44, 16-vCPU Firecracker guest (median of 3)"

CSV = """\
rep,scenario,kind,tasks,faults_per_s,churn_ops_per_s
1,private,threads,1,411426,0
1,private,processes,1,569286,0
1,private,threads,2,1045215,0
1,private,processes,2,1074425,0
1,private,threads,4,1855168,0
1,private,processes,4,2232631,0
1,private,threads,8,3117391,0
1,private,processes,8,3957234,0
1,private,threads,12,3742981,0
1,private,processes,12,4881077,0
1,private,threads,16,3671427,0
1,private,processes,16,5780607,0
1,shared,threads,1,573484,0
1,shared,processes,1,558373,0
1,shared,threads,2,941522,0
1,shared,processes,2,968701,0
1,shared,threads,4,1852690,0
1,shared,processes,4,2031099,0
1,shared,threads,8,3490694,0
1,shared,processes,8,3574747,0
1,shared,threads,12,4383508,0
1,shared,processes,12,4814020,0
1,shared,threads,16,5504890,0
1,shared,processes,16,6005621,0
2,private,threads,1,589848,0
2,private,processes,1,518205,0
2,private,threads,2,920915,0
2,private,processes,2,1077172,0
2,private,threads,4,1765492,0
2,private,processes,4,1835424,0
2,private,threads,8,2996517,0
2,private,processes,8,3565996,0
2,private,threads,12,3469137,0
2,private,processes,12,4994319,0
2,private,threads,16,3361904,0
2,private,processes,16,5439842,0
2,shared,threads,1,397450,0
2,shared,processes,1,493341,0
2,shared,threads,2,998918,0
2,shared,processes,2,1096975,0
2,shared,threads,4,1829078,0
2,shared,processes,4,2046885,0
2,shared,threads,8,3329768,0
2,shared,processes,8,3551843,0
2,shared,threads,12,4129010,0
2,shared,processes,12,4980503,0
2,shared,threads,16,4900185,0
2,shared,processes,16,5640526,0
3,private,threads,1,604804,0
3,private,processes,1,627603,0
3,private,threads,2,1243973,0
3,private,processes,2,1215930,0
3,private,threads,4,2162669,0
3,private,processes,4,2463923,0
3,private,threads,8,3326746,0
3,private,processes,8,4287533,0
3,private,threads,12,4290451,0
3,private,processes,12,5607770,0
3,private,threads,16,4095547,0
3,private,processes,16,6333497,0
3,shared,threads,1,496178,0
3,shared,processes,1,551550,0
3,shared,threads,2,1039922,0
3,shared,processes,2,1145850,0
3,shared,threads,4,1779796,0
3,shared,processes,4,1771057,0
3,shared,threads,8,3274029,0
3,shared,processes,8,3657242,0
3,shared,threads,12,4552605,0
3,shared,processes,12,5043773,0
3,shared,threads,16,5548973,0
3,shared,processes,16,6357439,0
"""


def medians() -> dict[tuple[str, str, int], float]:
    """(scenario, kind, tasks) -> median faults/s over the repetitions."""
    groups: dict[tuple[str, str, int], list[float]] = {}
    for row in csv.DictReader(io.StringIO(CSV)):
        key = (row["scenario"], row["kind"], int(row["tasks"]))
        groups.setdefault(key, []).append(float(row["faults_per_s"]))
    return {k: statistics.median(v) for k, v in sorted(groups.items())}


def for_workload(workload: str) -> dict[tuple[str, int], float]:
    """(kind, tasks) -> median faults/s for one pfbench scenario ({} if none)."""
    return {(k, n): v for (s, k, n), v in medians().items() if s == workload}


def ratios(workload: str) -> dict[int, float]:
    """tasks -> measured threads/processes ratio."""
    m = for_workload(workload)
    return {n: m[("threads", n)] / m[("processes", n)]
            for (k, n) in m if k == "threads" and m.get(("processes", n))}
