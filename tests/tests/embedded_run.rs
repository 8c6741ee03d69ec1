//! End-to-end runs in embedded mode (coordinator and workers in one process over the
//! in-memory queue): examples/medallion on generated data, and the commit protocol's promise
//! that a failed model leaves the previous version readable.

use std::path::Path;

use strata_tests::{medallion_with_data, strata};

fn record(project: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(project.join("target/run_results.json")).unwrap())
        .unwrap()
}

fn node<'a>(record: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    record["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|node| node["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in the run"))
}

#[test]
fn medallion_builds_end_to_end() {
    let (_dir, project) = medallion_with_data("20000");
    let code = strata(&[
        "build",
        "--project-dir",
        project.to_str().unwrap(),
        "--threads",
        "2",
    ]);
    let record = record(&project);
    assert_eq!(code, std::process::ExitCode::SUCCESS, "{record:#}");
    assert_eq!(record["success"], true);
    assert_eq!(record["nodes"].as_array().unwrap().len(), 23);
    // The run's W3C trace id, which every task's traceparent carries.
    let trace_id = record["trace_id"].as_str().unwrap();
    assert_eq!(trace_id.len(), 32, "{trace_id}");
    assert!(
        trace_id.chars().all(|c| c.is_ascii_hexdigit()),
        "{trace_id}"
    );
    assert_eq!(node(&record, "bronze_events")["rows"], 20000);
    // Row-wise over two source files: two partition-aligned tasks, one commit (version 0).
    assert_eq!(node(&record, "bronze_events")["tasks"], 2);
    assert_eq!(node(&record, "bronze_events")["version"], 0);
    // A window function needs every row: one task.
    assert_eq!(node(&record, "silver_events")["tasks"], 1);
    let silver = node(&record, "silver_events")["rows"].as_i64().unwrap();
    assert!(
        silver > 15_000 && silver < 20_000,
        "deduplicated and filtered: {silver}"
    );
    // Unknown users are expected: the relationships test warns instead of failing.
    let relationships = node(
        &record,
        "relationships_silver_events_user_id__user_id__ref_silver_users_",
    );
    assert_eq!(relationships["status"], "warn");
    assert!(relationships["failures"].as_i64().unwrap() > 0);
    assert_eq!(
        node(&record, "unique_silver_events_event_id")["status"],
        "pass"
    );
    for table in [
        "bronze/bronze_events",
        "silver/silver_events",
        "gold/daily_user_activity",
        "seeds/event_type_categories",
    ] {
        let log = project
            .join("warehouse")
            .join(table)
            .join("_delta_log/00000000000000000000.json");
        assert!(log.is_file(), "{} has no Delta log", table);
    }
    // The run record is kept in the warehouse too.
    let runs = project.join("warehouse/_strata/runs");
    assert_eq!(std::fs::read_dir(runs).unwrap().count(), 1);
    // Every committed file lives in a folder named for its run, task and attempt.
    let log = std::fs::read_to_string(
        project.join("warehouse/bronze/bronze_events/_delta_log/00000000000000000000.json"),
    )
    .unwrap();
    let run_id = record["run_id"].as_str().unwrap();
    let added: Vec<String> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|action| action["add"]["path"].as_str().map(str::to_string))
        .collect();
    let mut parts: Vec<&str> = added
        .iter()
        .map(|path| {
            let folder = path.split('/').next().unwrap();
            assert!(
                folder.starts_with(&format!("{run_id}-bronze_events-")) && folder.ends_with("-a1"),
                "{path} is not in a folder of its run, task and attempt"
            );
            &folder[folder.len() - 7..folder.len() - 3]
        })
        .collect();
    parts.sort_unstable();
    assert_eq!(parts, ["p000", "p001"], "{added:?}");
}

#[test]
fn a_memory_warehouse_builds_without_touching_the_disk() {
    let (_dir, project) = medallion_with_data("5000");
    let code = strata(&[
        "build",
        "--project-dir",
        project.to_str().unwrap(),
        "--warehouse",
        "memory://lake",
        "--threads",
        "2",
    ]);
    let record = record(&project);
    assert_eq!(code, std::process::ExitCode::SUCCESS, "{record:#}");
    assert_eq!(node(&record, "bronze_events")["rows"], 5000);
    assert_eq!(
        node(&record, "unique_silver_events_event_id")["status"],
        "pass"
    );
    assert!(!project.join("warehouse").exists());
}

#[test]
fn a_failed_model_leaves_the_previous_version_readable() {
    let (_dir, project) = medallion_with_data("2000");
    let dir = project.to_str().unwrap();
    assert_eq!(
        strata(&["run", "--project-dir", dir, "--select", "+silver_users"]),
        std::process::ExitCode::SUCCESS
    );
    let first = record(&project);
    let rows = node(&first, "silver_users")["rows"].as_i64().unwrap();
    assert_eq!(node(&first, "silver_users")["version"], 0);

    // Break the model: a column that does not exist fails at planning, a user error.
    let model = project.join("models/silver/silver_users.sql");
    std::fs::write(
        &model,
        "select no_such_column from {{ ref('bronze_users') }}\n",
    )
    .unwrap();
    assert_eq!(
        strata(&["run", "--project-dir", dir, "--select", "silver_users"]),
        std::process::ExitCode::FAILURE
    );
    let failed = record(&project);
    let silver = node(&failed, "silver_users");
    assert_eq!(silver["status"], "error");
    assert_eq!(silver["attempts"], 1, "a user error is not retried");
    assert!(
        silver["error"].as_str().unwrap().contains("no_such_column"),
        "{silver}"
    );

    // The table still answers with the first version's rows: a test reading it passes.
    std::fs::write(
        project.join("tests/users_still_there.sql"),
        format!("select n from (select count(*) as n from {{{{ ref('silver_users') }}}}) as c where n <> {rows}\n"),
    )
    .unwrap();
    assert_eq!(
        strata(&[
            "test",
            "--project-dir",
            dir,
            "--select",
            "users_still_there"
        ]),
        std::process::ExitCode::SUCCESS
    );
    assert_eq!(
        node(&record(&project), "users_still_there")["status"],
        "pass"
    );
    assert!(
        !project
            .join("warehouse/silver/silver_users/_delta_log/00000000000000000001.json")
            .exists(),
        "the failed run must not commit"
    );
}

/// A model that lists the columns of a table built in the same run
/// (`adapter.get_columns_in_relation(ref(…))`, as `dbt_utils.star` and fivetran's staging
/// models do) is compiled again once that table is built; a table that is never built is a
/// clear error naming the question.
#[test]
fn a_model_asking_for_columns_of_a_table_built_in_the_run_is_compiled_when_it_is_built() {
    let (_dir, project) = medallion_with_data("2000");
    let dir = project.to_str().unwrap();
    // Its columns are declared nowhere: only the built table knows them.
    std::fs::write(
        project.join("models/gold/events_per_type.sql"),
        "select event_type, count(*) as events, sum(amount) as amount\nfrom {{ ref('silver_events') }}\ngroup by event_type\n",
    )
    .unwrap();
    // A view: the model that reads it must get its SQL as compiled again, not the first one.
    std::fs::write(
        project.join("models/gold/events_per_type_listed.sql"),
        "{{ config(materialized='view') }}\n\
         {%- set columns = adapter.get_columns_in_relation(ref('events_per_type')) -%}\n\
         select {% for column in columns %}{{ column.name }} as listed_{{ column.name }}{% if not loop.last %}, {% endif %}{% endfor %}\n\
         from {{ ref('events_per_type') }}\n",
    )
    .unwrap();
    std::fs::write(
        project.join("models/gold/events_per_type_kept.sql"),
        "select * from {{ ref('events_per_type_listed') }}\n",
    )
    .unwrap();
    assert_eq!(
        strata(&[
            "run",
            "--project-dir",
            dir,
            "--select",
            "+events_per_type_kept"
        ]),
        std::process::ExitCode::SUCCESS
    );
    let built = record(&project);
    let parent_rows = node(&built, "events_per_type")["rows"].as_i64().unwrap();
    let listed = node(&built, "events_per_type_listed");
    assert_eq!(listed["status"], "success", "{listed}");
    let kept = node(&built, "events_per_type_kept");
    assert_eq!(kept["status"], "success", "{kept}");
    assert_eq!(kept["rows"].as_i64().unwrap(), parent_rows);
    // Every listed column is there: a test over them passes.
    std::fs::write(
        project.join("tests/listed_columns_match.sql"),
        "select * from {{ ref('events_per_type_kept') }} as l\n\
         left join {{ ref('events_per_type') }} as e on l.listed_event_type = e.event_type\n\
         where (e.events is distinct from l.listed_events) or (e.amount is distinct from l.listed_amount)\n",
    )
    .unwrap();
    assert_eq!(
        strata(&[
            "test",
            "--project-dir",
            dir,
            "--select",
            "listed_columns_match"
        ]),
        std::process::ExitCode::SUCCESS
    );

    // A table no node builds: still unknown after the parents are built.
    std::fs::write(
        project.join("models/gold/listing_nowhere.sql"),
        "{%- set columns = adapter.get_columns_in_relation(api.Relation.create(schema='gold', identifier='nowhere')) -%}\n\
         select {{ columns | length }} as listed from {{ ref('events_per_type') }}\n",
    )
    .unwrap();
    assert_eq!(
        strata(&["run", "--project-dir", dir, "--select", "listing_nowhere"]),
        std::process::ExitCode::FAILURE
    );
    let failed = record(&project);
    let error = node(&failed, "listing_nowhere")["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.contains("get_columns_in_relation(")
            && error.contains("nowhere")
            && error.contains("still is after the node's parents were built"),
        "{error}"
    );
}
