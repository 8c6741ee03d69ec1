//! Installed packages' own models, seeds, sources and tests compile with the project's.
use std::path::Path;

use crate::compiler::{Compilation, CompileOptions, compile};
use crate::project::Project;

fn write(root: &Path, path: &str, text: &str) {
    let full = root.join(path);
    std::fs::create_dir_all(full.parent().unwrap()).unwrap();
    std::fs::write(full, text).unwrap();
}

/// A project `shop` with the package `ledger` installed in dbt_packages/, plus `extra` files.
fn compile_with(extra: &[(&str, &str)]) -> Compilation {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(
        root,
        "dbt_project.yml",
        "name: shop\nvars:\n  ledger:\n    currency: EUR\nmodels:\n  ledger:\n    staging:\n      +materialized: table\n",
    );
    write(
        root,
        "dbt_packages/ledger/dbt_project.yml",
        "name: ledger\nvars:\n  ledger:\n    currency: USD\n  rounding: 2\nmodels:\n  ledger:\n    +materialized: view\n    +tags: [ledger]\n",
    );
    write(
        root,
        "dbt_packages/ledger/macros/money.sql",
        "{% macro money(column) %}round({{ column }}, {{ var('rounding') }}){% endmacro %}",
    );
    write(
        root,
        "dbt_packages/ledger/models/staging/stg_entries.sql",
        "select {{ money('amount') }} as amount, '{{ var(\"currency\") }}' as currency from {{ ref('entry_kinds') }}",
    );
    write(
        root,
        "dbt_packages/ledger/models/entries.sql",
        "select * from {{ ref('ledger', 'stg_entries') }}",
    );
    write(
        root,
        "dbt_packages/ledger/seeds/entry_kinds.csv",
        "amount,kind\n1,a\n",
    );
    write(
        root,
        "dbt_packages/ledger/models/schema.yml",
        "version: 2\nmodels:\n  - name: entries\n    columns:\n      - name: amount\n        data_tests: [not_null]\n",
    );
    for (path, text) in extra {
        write(root, path, text);
    }
    let loaded = Project::load(root);
    assert!(!loaded.diagnostics.has_errors(), "{}", loaded.diagnostics);
    compile(&loaded.project.unwrap(), &CompileOptions::default())
}

#[test]
fn package_nodes_compile_under_their_package_with_the_projects_settings_on_top() {
    let compilation = compile_with(&[(
        "models/report.sql",
        "select * from {{ ref('ledger', 'entries') }}",
    )]);
    let manifest = compilation.manifest.expect("compiles");
    let staged = &manifest.nodes["model.ledger.stg_entries"];
    assert_eq!(staged.package_name, "ledger");
    assert_eq!(staged.fqn, ["ledger", "staging", "stg_entries"]);
    // The package says view, the root project's block for the package says table.
    assert_eq!(staged.config.materialized.to_string(), "table");
    assert_eq!(staged.config.tags, ["ledger"]);
    assert_eq!(
        staged.original_file_path,
        "dbt_packages/ledger/models/staging/stg_entries.sql"
    );
    assert_eq!(
        staged.compiled_path.as_deref(),
        Some("compiled/ledger/models/staging/stg_entries.sql")
    );
    let sql = staged.compiled_code.as_deref().unwrap();
    // The package's macro, unqualified; its var, scoped to it by the root project.
    assert!(sql.contains("round(amount, 2)"), "{sql}");
    assert!(sql.contains("'EUR' as currency"), "{sql}");
    assert_eq!(staged.depends_on, ["seed.ledger.entry_kinds"]);
    assert_eq!(
        manifest.nodes["model.shop.report"].depends_on,
        ["model.ledger.entries"]
    );
    assert_eq!(
        manifest.nodes["seed.ledger.entry_kinds"].original_file_path,
        "dbt_packages/ledger/seeds/entry_kinds.csv"
    );
    assert!(
        manifest
            .nodes
            .contains_key("test.ledger.not_null_entries_amount")
    );
}

#[test]
fn a_ref_to_the_wrong_package_names_the_right_one() {
    let compilation = compile_with(&[(
        "models/report.sql",
        "select * from {{ ref('shop', 'entries') }}",
    )]);
    let text = compilation.diagnostics.to_string();
    assert!(
        text.contains("'entries' belongs to package 'ledger', not 'shop'"),
        "{text}"
    );
}

#[test]
fn the_project_calls_a_packages_macro_through_its_namespace() {
    let compilation = compile_with(&[("models/report.sql", "select {{ money('x') }}")]);
    let text = compilation.diagnostics.to_string();
    assert!(
        text.contains("macro 'money' belongs to package 'ledger': call it as ledger.money"),
        "{text}"
    );
    let compilation = compile_with(&[("models/report.sql", "select {{ ledger.money('x') }}")]);
    assert!(
        compilation.manifest.is_some(),
        "{}",
        compilation.diagnostics
    );
}

#[test]
fn a_model_named_like_a_packages_model_is_an_error() {
    let compilation = compile_with(&[("models/entries.sql", "select 1 as amount")]);
    let text = compilation.diagnostics.to_string();
    assert!(text.contains("two models are named 'entries'"), "{text}");
}
