"""What the comparisons with dbt-duckdb share: one project built by Strata and by dbt-duckdb,
each in its own copy, and the report at the end.

Imported by compare_snapshots.py and compare_exports.py (run as scripts from this folder).
"""
import os
import shutil
import subprocess
import sys


def run(command, cwd):
    """Runs a tool in `cwd`; on failure prints the end of its output and stops the script."""
    env = dict(os.environ, DBT_SEND_ANONYMOUS_USAGE_STATS="false", DO_NOT_TRACK="1")
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        print(result.stdout[-4000:], result.stderr[-4000:], sep="\n")
        sys.exit(f"failed: {' '.join(command)}")


def two_copies(project, work):
    """Copies `project` into `work` twice, one for each tool, and gives dbt-duckdb's copy a
    profile (named as the project's `profile:`) writing to `work/dbt.duckdb`. Returns the
    Strata copy, the dbt copy and the database file."""
    strata_project = os.path.join(work, "strata")
    dbt_project = os.path.join(work, "dbt")
    for copy in (strata_project, dbt_project):
        shutil.copytree(project, copy, ignore=shutil.ignore_patterns("target", "warehouse"))
    with open(os.path.join(dbt_project, "dbt_project.yml")) as handle:
        profile = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("profile:"))
    database = os.path.join(work, "dbt.duckdb")
    with open(os.path.join(dbt_project, "profiles.yml"), "w") as handle:
        handle.write(f"{profile}:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n"
                     f"      path: {database}\n      threads: 1\n")
    return strata_project, dbt_project, database


def report(what, problems, compared):
    """Prints every problem and the tally; exits non-zero when anything failed or nothing was
    compared."""
    for problem in problems:
        print(f"FAIL {problem}")
    print(f"{what} vs dbt-duckdb: {compared - len(problems)} passed, {len(problems)} failed")
    sys.exit(1 if problems or compared == 0 else 0)
