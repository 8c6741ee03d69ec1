#!/usr/bin/env python3
"""dbt parity: dbt-core itself parses each project and its graph must match Strata's.

For every project given, `dbt parse` (dbt-core + dbt-duckdb, pinned in scripts/requirements.txt)
and `strata compile` run on the same copy; then the two manifests are compared on what decides
how a run behaves: which models, seeds, snapshots and sources exist, what each model reads, how it is
materialized, its tags, and which tests check which column of which node, under which name
(generic test names are dbt's, long ones included). Where a project defines its own
`generate_schema_name` or `generate_alias_name`, each node's schema and table name are compared
too (without them Strata names relations by its own rule: the layer folder as schema).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

PROFILE = """{name}:
  target: dev
  outputs:
    dev:
      type: duckdb
      path: ":memory:"
"""


def short(unique_id):
    """model.project.name -> model:project.name: the package a node belongs to is compared too."""
    kind, rest = unique_id.split(".", 1)
    return f"{kind}:{rest}"


def dbt_graph(manifest, naming):
    graph = {"nodes": {}, "tests": set()}
    for unique_id, node in manifest["nodes"].items():
        kind = node["resource_type"]
        if kind in ("model", "seed", "snapshot"):
            graph["nodes"][short(unique_id)] = {
                "depends_on": sorted(short(parent) for parent in node["depends_on"].get("nodes", [])),
                "materialized": node["config"]["materialized"],
                "tags": sorted(node["config"].get("tags") or []),
            }
            if naming and node["config"]["materialized"] != "ephemeral":
                graph["nodes"][short(unique_id)]["relation"] = f"{node['schema']}.{node['alias']}"
        elif kind == "test":
            metadata = node.get("test_metadata")
            attached = node.get("attached_node") or ""
            parents = node["depends_on"].get("nodes", [])
            if not attached and len(parents) == 1:
                attached = parents[0]  # dbt leaves attached_node empty for tests on sources
            column = node.get("column_name")
            if metadata:
                # A package's generic test is `package.name` in Strata's manifest.
                test_name = metadata["name"]
                if metadata.get("namespace"):
                    test_name = f"{metadata['namespace']}.{test_name}"
                graph["tests"].add((test_name, short(attached) if attached else "", column or "", node["name"]))
            else:
                graph["tests"].add(("singular", node["name"], "", node["name"]))
    for unique_id in manifest["sources"]:
        graph["nodes"][short(unique_id)] = {"depends_on": [], "materialized": "source", "tags": []}
    return graph


def strata_graph(manifest, naming):
    graph = {"nodes": {}, "tests": set()}
    for unique_id, node in manifest["nodes"].items():
        kind = node["resource_type"]
        if kind in ("model", "seed", "snapshot"):
            graph["nodes"][short(unique_id)] = {
                "depends_on": sorted(short(parent) for parent in node["depends_on"]),
                "materialized": node["config"]["materialized"],
                "tags": sorted(node["config"].get("tags") or []),
            }
            if naming and node["config"]["materialized"] != "ephemeral":
                relation = node["relation"]
                graph["nodes"][short(unique_id)]["relation"] = f"{relation['schema']}.{relation['identifier']}"
        elif kind == "source":
            graph["nodes"][short(unique_id)] = {"depends_on": [], "materialized": "source", "tags": []}
        elif kind == "test":
            test = node["test"]
            if test["test_name"] == "singular":
                graph["tests"].add(("singular", node["name"], "", node["name"]))
            else:
                attached = test.get("attached_node") or ""
                graph["tests"].add((test["test_name"], short(attached) if attached else "", test.get("column_name") or "", node["name"]))
    return graph


def compare(name, dbt, strata):
    problems = []
    for key in sorted(set(dbt["nodes"]) | set(strata["nodes"])):
        left, right = dbt["nodes"].get(key), strata["nodes"].get(key)
        if left is None or right is None:
            problems.append(f"{name}: {key} exists only in {'strata' if left is None else 'dbt'}")
        elif left != right:
            problems.append(f"{name}: {key} differs\n    dbt:    {left}\n    strata: {right}")
    for test in sorted(dbt["tests"] ^ strata["tests"]):
        side = "dbt" if test in dbt["tests"] else "strata"
        problems.append(f"{name}: test {test} exists only in {side}")
    return problems


def check(project, strata, dbt):
    with tempfile.TemporaryDirectory(prefix="strata-parity-") as work:
        copy = os.path.join(work, "project")
        shutil.copytree(project, copy, ignore=shutil.ignore_patterns("target", "data", "warehouse"))
        with open(os.path.join(copy, "dbt_project.yml")) as handle:
            profile = next(
                (line.split(":", 1)[1].split("#")[0].strip() for line in handle if line.startswith("profile:")), None
            )
        if profile is None:
            with open(os.path.join(copy, "dbt_project.yml"), "a") as handle:
                handle.write("\nprofile: parity\n")
            profile = "parity"
        with open(os.path.join(copy, "profiles.yml"), "w") as handle:
            handle.write(PROFILE.format(name=profile))
        env = dict(os.environ, DBT_SEND_ANONYMOUS_USAGE_STATS="false", DO_NOT_TRACK="1", STRATA_TEST_REGION="eu-west")
        run = subprocess.run(
            [dbt, "parse", "--no-partial-parse", "--profiles-dir", copy, "--project-dir", copy],
            cwd=copy, env=env, capture_output=True, text=True,
        )
        if run.returncode != 0:
            return [f"{project}: dbt parse failed:\n{run.stdout[-3000:]}{run.stderr[-2000:]}"]
        with open(os.path.join(copy, "target", "manifest.json")) as handle:
            dbt_manifest = json.load(handle)
        run = subprocess.run([strata, "compile", "--project-dir", copy, "--target-path", "strata-target"],
                             env=env, capture_output=True, text=True)
        if run.returncode != 0:
            return [f"{project}: strata compile failed:\n{run.stderr[-3000:]}"]
        with open(os.path.join(copy, "strata-target", "manifest.json")) as handle:
            strata_manifest = json.load(handle)
        naming = overrides_naming(copy)
        return compare(project, dbt_graph(dbt_manifest, naming), strata_graph(strata_manifest, naming))


def overrides_naming(project):
    """Whether the project's macros define generate_schema_name or generate_alias_name."""
    for folder, _, files in os.walk(os.path.join(project, "macros")):
        for name in files:
            with open(os.path.join(folder, name)) as handle:
                text = handle.read()
            if "macro generate_schema_name" in text or "macro generate_alias_name" in text:
                return True
    return False


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--strata", required=True)
    parser.add_argument("--dbt", required=True)
    parser.add_argument("projects", nargs="+")
    args = parser.parse_args()
    problems = []
    for project in args.projects:
        found = check(project, args.strata, args.dbt)
        print(f"{'ok  ' if not found else 'FAIL'} {project}")
        problems.extend(found)
    if problems:
        print("\n".join(problems))
        failed = len({problem.split(":")[0] for problem in problems})
        print(f"parity: {len(args.projects) - failed} passed, {failed} failed")
        sys.exit(1)
    print(f"parity: {len(args.projects)} passed, 0 failed")


if __name__ == "__main__":
    main()
