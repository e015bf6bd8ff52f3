"""Which cells ran beside which: on a cluster a measurement shares its node with whatever else ran there.

A record from the ray executor names its node and when its task ran there (`ran_from`/`ran_until`, that
node's clock). After a sweep, each such record gets `beside`: the keys of the other cells that ran on
the same node at any moment while it ran. CPU cells should never have any; GPU cells may.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from dia_bench.harness import rundir


def node_id(rec: dict[str, Any]) -> str | None:
    node = rec.get("node")
    return node.get("id") if isinstance(node, dict) else None


def beside(records: list[dict[str, Any]]) -> dict[str, list[str]]:
    """For each record that names its node and run times, the keys of records that overlapped it there."""
    by_node: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for rec in records:
        if node_id(rec) and isinstance(rec.get("ran_from"), (int, float)) and isinstance(rec.get("ran_until"),
                                                                                          (int, float)):
            by_node[node_id(rec)].append(rec)
    out: dict[str, list[str]] = {}
    for recs in by_node.values():
        for rec in recs:
            out[rec["key"]] = sorted(o["key"] for o in recs if o is not rec
                                     and o["ran_from"] < rec["ran_until"] and rec["ran_from"] < o["ran_until"])
    return out


def annotate(run_dir: Path) -> None:
    """Writes `beside` into every record of the run that names its node (atomically, as the sweep does)."""
    records = rundir.records(run_dir)
    overlaps = beside(records)
    for rec in records:
        key = rec.get("key")
        found = overlaps.get(key) if key else None
        if found is not None and rec.get("beside") != found:
            rec["beside"] = found
            rundir.write_record(run_dir, key, rec)
