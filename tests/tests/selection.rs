//! Selection tests: dbt's selector syntax over the examples/medallion project.

use std::collections::BTreeSet;

use strata_core::manifest::Manifest;
use strata_core::selection::{self, SelectionError};
use strata_tests::{repo_root, test_env};

fn manifest() -> Manifest {
    let outcome = strata::run_compile(
        &repo_root().join("examples/medallion"),
        None,
        "dev",
        &[],
        &[],
        &test_env(),
    );
    assert!(
        !outcome.diagnostics.has_errors(),
        "{}",
        outcome.diagnostics.render(false)
    );
    outcome.manifest.expect("manifest")
}

/// Names of the selected models, seeds and sources (tests are checked separately).
fn names(manifest: &Manifest, select: &[&str], exclude: &[&str]) -> Vec<String> {
    let select: Vec<String> = select.iter().map(|s| s.to_string()).collect();
    let exclude: Vec<String> = exclude.iter().map(|s| s.to_string()).collect();
    let chosen = selection::select(manifest, &select, &exclude).expect("valid selection");
    let mut names: Vec<String> = chosen
        .nodes
        .iter()
        .filter_map(|id| manifest.nodes.get(id))
        .filter(|node| node.test.is_none())
        .map(|node| match &node.source {
            Some(info) => format!("source:{}.{}", info.source_name, node.name),
            None => node.name.clone(),
        })
        .collect();
    names.sort();
    names
}

#[test]
fn plain_names_and_graph_operators() {
    let m = manifest();
    assert_eq!(names(&m, &["silver_events"], &[]), ["silver_events"]);
    assert_eq!(
        names(&m, &["+silver_events"], &[]),
        ["bronze_events", "silver_events", "source:raw.events"]
    );
    assert_eq!(
        names(&m, &["1+silver_events"], &[]),
        ["bronze_events", "silver_events"]
    );
    assert_eq!(
        names(&m, &["silver_events+"], &[]),
        [
            "daily_user_activity",
            "revenue_by_plan",
            "silver_events",
            "user_running_revenue"
        ]
    );
    assert_eq!(
        names(&m, &["bronze_events+1"], &[]),
        ["bronze_events", "silver_events"]
    );
    assert_eq!(
        names(&m, &["silver_*"], &[]),
        ["silver_events", "silver_users"]
    );
}

#[test]
fn at_selects_descendants_and_their_ancestors() {
    let m = manifest();
    assert_eq!(
        names(&m, &["@silver_users"], &[]),
        [
            "bronze_events",
            "bronze_users",
            "event_categories",
            "event_type_categories",
            "revenue_by_plan",
            "silver_events",
            "silver_users",
            "source:raw.events",
            "source:raw.users"
        ]
    );
}

#[test]
fn methods() {
    let m = manifest();
    let gold = [
        "daily_user_activity",
        "revenue_by_plan",
        "user_running_revenue",
    ];
    assert_eq!(names(&m, &["layer:gold"], &[]), gold);
    assert_eq!(names(&m, &["tag:reporting"], &[]), gold);
    assert_eq!(names(&m, &["path:models/gold"], &[]), gold);
    assert_eq!(
        names(&m, &["models/gold/revenue_by_plan.sql"], &[]),
        ["revenue_by_plan"]
    );
    assert_eq!(
        names(&m, &["config.materialized:ephemeral"], &[]),
        ["event_categories"]
    );
    assert_eq!(
        names(&m, &["resource_type:seed"], &[]),
        ["event_type_categories"]
    );
    assert_eq!(
        names(&m, &["source:raw.users+1"], &[]),
        ["bronze_users", "source:raw.users"]
    );
    assert_eq!(
        names(&m, &["fqn:medallion.bronze.*"], &[]),
        ["bronze_events", "bronze_users"]
    );
}

#[test]
fn union_intersection_and_exclusion() {
    let m = manifest();
    assert_eq!(
        names(&m, &["layer:bronze layer:gold"], &["tag:reporting"]),
        ["bronze_events", "bronze_users"]
    );
    assert_eq!(
        names(&m, &["+revenue_by_plan,layer:silver"], &[]),
        ["event_categories", "silver_events", "silver_users"]
    );
    assert_eq!(
        names(&m, &["layer:silver"], &["silver_users+"]),
        ["event_categories", "silver_events"]
    );
}

#[test]
fn tests_come_along_with_the_nodes_they_test() {
    let m = manifest();
    let chosen = selection::select(&m, &[String::from("silver_users")], &[]).unwrap();
    let tests: BTreeSet<&str> = chosen
        .nodes
        .iter()
        .filter_map(|id| m.nodes.get(id))
        .filter(|node| node.test.is_some())
        .map(|node| node.name.as_str())
        .collect();
    assert!(tests.contains("unique_silver_users_user_id"), "{tests:?}");
    // The relationships test reads silver_users too, so it is selected eagerly, as in dbt.
    assert!(
        tests.contains("relationships_silver_events_user_id__user_id__ref_silver_users_"),
        "{tests:?}"
    );
    assert!(
        !tests.contains("unique_silver_events_event_id"),
        "{tests:?}"
    );
}

#[test]
fn bad_selectors_explain_themselves() {
    let m = manifest();
    let err = selection::select(&m, &[String::from("tagg:gold")], &[]).unwrap_err();
    assert!(matches!(err, SelectionError::UnknownMethod { .. }));
    assert!(err.to_string().contains("did you mean 'tag:'"), "{err}");
    let err = selection::select(&m, &[String::from("+")], &[]).unwrap_err();
    assert!(err.to_string().contains("nothing to select"), "{err}");
    let chosen = selection::select(&m, &[String::from("no_such_model")], &[]).unwrap();
    assert!(chosen.nodes.is_empty());
    assert_eq!(chosen.unmatched, ["no_such_model"]);
}
