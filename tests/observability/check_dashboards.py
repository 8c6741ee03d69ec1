#!/usr/bin/env python3
"""The Grafana dashboards and provisioning under deploy/grafana are valid, and every query
names a metric Strata exports.

Exported metrics are the names given to the metric constructors in coordinator/src/metrics.rs,
worker/src/metrics.rs and telemetry/src/http.rs (a histogram, whose name ends in its unit, also exports _bucket, _sum
and _count). Every panel's
PromQL expression may only name those; every panel points at a provisioned datasource; every
dashboard has a unique uid.
"""
import json
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
SOURCES = [ROOT / "coordinator/src/metrics.rs", ROOT / "worker/src/metrics.rs", ROOT / "telemetry/src/http.rs"]
GRAFANA = ROOT / "deploy/grafana"


def exported():
    names = set()
    for source in SOURCES:
        text = source.read_text()
        for name in re.findall(r'"(strata_[a-z0-9_]+)"', text):
            names.add(name)
    # Strata's histograms are its durations and sizes: the names ending in a unit.
    for name in [name for name in names if name.endswith(("_seconds", "_bytes"))]:
        names.update({f"{name}_bucket", f"{name}_sum", f"{name}_count"})
    return names


def datasource_uids():
    text = (GRAFANA / "provisioning/datasources/strata.yaml").read_text()
    return set(re.findall(r"uid:\s*(\S+)", text))


def main():
    problems = []
    metrics = exported()
    if not metrics:
        problems.append("no metric found in the sources")
    uids = datasource_uids()
    seen_uids = set()
    dashboards = sorted((GRAFANA / "dashboards").glob("*.json"))
    if not dashboards:
        problems.append("no dashboard under deploy/grafana/dashboards")
    for path in dashboards:
        try:
            dashboard = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            problems.append(f"{path.name}: not valid JSON: {err}")
            continue
        uid = dashboard.get("uid")
        if not uid or uid in seen_uids:
            problems.append(f"{path.name}: missing or repeated uid {uid!r}")
        seen_uids.add(uid)
        for panel in dashboard.get("panels", []):
            where = f"{path.name}: panel {panel.get('title')!r}"
            source = (panel.get("datasource") or {}).get("uid")
            if source not in uids:
                problems.append(f"{where}: datasource {source!r} is not provisioned ({sorted(uids)})")
            for target in panel.get("targets", []):
                expr = target.get("expr")
                if expr is None:
                    continue
                named = set(re.findall(r"\bstrata_[a-z0-9_]+", expr))
                if not named:
                    problems.append(f"{where}: query names no strata metric: {expr}")
                for name in sorted(named - metrics):
                    problems.append(f"{where}: '{name}' is not a metric Strata exports")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    print(f"dashboards: {len(dashboards)} checked against {len(metrics)} exported series names; "
          f"{len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
