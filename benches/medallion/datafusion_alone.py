#!/usr/bin/env python3
"""The medallion pipeline with DataFusion alone (the Python package, same engine version):
the compiled SQL of every model, in DAG order, each written with COPY ... TO Parquet and read
back by the models downstream. No Delta, no tests, no orchestration: the floor Strata's
overhead is measured against."""
import json
import os
import sys

from datafusion import SessionContext


def quote(name):
    return '"' + name.replace('"', '""') + '"'


def main():
    project, manifest_path, out = sys.argv[1], sys.argv[2], sys.argv[3]
    skip = set(sys.argv[4].split(",")) if len(sys.argv) > 4 and sys.argv[4] else set()
    with open(manifest_path) as handle:
        manifest = json.load(handle)
    ctx = SessionContext()
    nodes = manifest["nodes"]
    done, order = set(), []
    def visit(node_id):
        if node_id in done:
            return
        done.add(node_id)
        for parent in manifest["parent_map"].get(node_id, []):
            visit(parent)
        order.append(node_id)
    for node_id in sorted(nodes):
        visit(node_id)
    schemas = set()
    def register(relation, location, kind):
        schema = relation["schema"]
        if schema not in schemas:
            ctx.sql(f"create schema if not exists {quote(schema)}").collect()
            schemas.add(schema)
        options = " options ('format.has_header' 'true')" if kind == "csv" else ""
        ctx.sql(
            f"create external table {quote(schema)}.{quote(relation['identifier'])} stored as {kind} location '{location}'{options}"
        ).collect()
    for node_id in order:
        node = nodes[node_id]
        kind = node["resource_type"]
        if kind == "source":
            info = node["source"]
            location = info["location"] if "://" in info["location"] else os.path.join(project, info["location"])
            if "*" in location:
                location = os.path.dirname(location) + "/"
            register(node["relation"], location, info["format"])
        elif kind == "seed":
            register(node["relation"], os.path.join(project, node["original_file_path"]), "csv")
        elif kind == "model" and node["config"]["materialized"] != "ephemeral" and node["name"] not in skip:
            relation = node["relation"]
            target = os.path.join(out, relation["schema"], relation["identifier"]) + "/"
            os.makedirs(target, exist_ok=True)
            ctx.sql(f"copy ({node['compiled_code']}) to '{target}' stored as parquet").collect()
            register(relation, target, "parquet")
    print(f"datafusion alone: built {sum(1 for n in nodes.values() if n['resource_type'] == 'model')} models")


if __name__ == "__main__":
    main()
