//! Property tests: random projects — valid, broken and garbage — never make the compiler
//! panic, always compile the same way twice, and every diagnostic points inside its file.
//! The coverage-guided fuzz target for the same property lives in `fuzz/`.

use std::path::Path;

use proptest::prelude::*;
use strata_tests::test_env;

/// SQL/Jinja fragments, from well-formed to broken, that models are assembled from.
fn sql_fragment(models: usize) -> impl Strategy<Value = String> {
    let model = 0..models.max(1);
    prop_oneof![
        Just(String::from("select 1 as id")),
        model
            .clone()
            .prop_map(|i| format!(" from {{{{ ref('m{i}') }}}} ")),
        model
            .clone()
            .prop_map(|i| format!(" join {{{{ ref(\"m{i}\") }}}} using (id) ")),
        Just(String::from(" {{ ref('missing_model') }} ")),
        Just(String::from(" {{ source('raw', 'events') }} ")),
        Just(String::from(" {{ source('raw', 'nope') }} ")),
        Just(String::from("{{ config(materialized='table') }}")),
        Just(String::from("{{ config(materialized='ephemeral') }}")),
        Just(String::from(
            "{{ config(materialized='incremental', unique_key='id') }}"
        )),
        Just(String::from("{{ config(materialized=3) }}")),
        Just(String::from("{{ config(enabled=false) }}")),
        Just(String::from("{{ config(schema='other', alias='x') }}")),
        Just(String::from(
            "{% if is_incremental() %} where id > 0 {% endif %}"
        )),
        Just(String::from("{% for i in range(3) %}{{ i }},{% endfor %}")),
        Just(String::from("{{ var('v', 1) }} {{ var('required_var') }}")),
        Just(String::from("{{ env_var('STRATA_TEST_REGION') }}")),
        Just(String::from("{{ helper('x') }}")),
        Just(String::from("{% raw %}{{ x }}{% endraw %}")),
        Just(String::from("{{")),
        Just(String::from("{% if %}")),
        Just(String::from("{% endfor %}")),
        Just(String::from("{{ this }} {{ target.name }}")),
        Just(String::from("{{ ref() }} {{ ref(1, 2, 3) }}")),
        Just(String::from(
            "{{ exceptions.raise_compiler_error('boom') }}"
        )),
        "[ -~\\n]{0,40}",
        "\\PC{0,20}",
    ]
}

fn model_sql(models: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(sql_fragment(models), 0..6).prop_map(|parts| parts.concat())
}

fn yaml_fragment(models: usize) -> impl Strategy<Value = String> {
    let model = 0..models.max(1);
    prop_oneof![
        model.clone().prop_map(|i| format!("models:\n  - name: m{i}\n    columns:\n      - name: id\n        tests: [not_null, unique]\n")),
        model.clone().prop_map(|i| format!("models:\n  - name: m{i}\n    data_tests:\n      - accepted_values: {{column_name: id, values: [1, 2]}}\n")),
        model.clone().prop_map(|i| format!(
            "models:\n  - name: m{i}\n    columns:\n      - name: id\n        tests:\n          - relationships: {{to: ref('m0'), field: id, config: {{severity: warn}}}}\n"
        )),
        Just(String::from("sources:\n  - name: raw\n    meta: {external_location: 'data/{name}.parquet'}\n    tables:\n      - name: events\n")),
        Just(String::from("sources:\n  - name: raw\n    tables:\n      - name: events\n        external: {location: 'x'}\n")),
        Just(String::from("models: 3\n")),
        Just(String::from("models:\n  - name: m0\n    config: {materialized: tabel}\n")),
        Just(String::from("models:\n  - columns: [\n")),
        Just(String::from("- just\n- a list\n")),
        "[ -~\\n]{0,60}",
    ]
}

fn project_file() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::from("name: fuzz\n")),
        Just(String::from(
            "name: fuzz\nvars: {required_var: 5}\nmodels:\n  fuzz:\n    +materialized: table\n"
        )),
        Just(String::from(
            "name: fuzz\nmodels:\n  fuzz:\n    +materialized: nope\n    sub: 1\n"
        )),
        Just(String::from("name: fuzz\nmodel-paths: [models, '../x']\n")),
        Just(String::from("name: [\n")),
        Just(String::new()),
        "[ -~\\n]{0,60}",
    ]
}

#[derive(Debug, Clone)]
struct GeneratedProject {
    project_file: String,
    models: Vec<(String, String)>,
    properties: Vec<String>,
    macros: String,
    seed: String,
}

fn project() -> impl Strategy<Value = GeneratedProject> {
    (1usize..8).prop_flat_map(|count| {
        (
            project_file(),
            prop::collection::vec(model_sql(count), count),
            prop::collection::vec(yaml_fragment(count), 0..3),
            prop_oneof![
                Just(String::new()),
                Just(String::from("{% macro helper(x) %}upper({{ x }}){% endmacro %}")),
                Just(String::from("{% macro helper(x) %}{{ ref('m0') }}{% endmacro %}{% macro helper(y) %}{% endmacro %}")),
                Just(String::from("{% macro broken( %}")),
            ],
            prop_oneof![Just(String::from("a,b\n1,2\n")), Just(String::from("a,a\n")), Just(String::from("\u{0}\n")), Just(String::new())],
        )
            .prop_map(move |(project_file, sqls, properties, macros, seed)| GeneratedProject {
                project_file,
                models: sqls.into_iter().enumerate().map(|(i, sql)| (format!("m{i}"), sql)).collect(),
                properties,
                macros,
                seed,
            })
    })
}

fn write(root: &Path, path: &str, text: &str) {
    let full = root.join(path);
    std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
    std::fs::write(full, text).expect("write");
}

fn materialize(project: &GeneratedProject, root: &Path) {
    write(root, "dbt_project.yml", &project.project_file);
    for (index, (name, sql)) in project.models.iter().enumerate() {
        let layer = ["bronze", "silver", "gold"][index % 3];
        write(root, &format!("models/{layer}/{name}.sql"), sql);
    }
    for (index, text) in project.properties.iter().enumerate() {
        write(root, &format!("models/props_{index}.yml"), text);
    }
    write(root, "macros/helpers.sql", &project.macros);
    write(root, "seeds/codes.csv", &project.seed);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn compiling_random_projects_never_panics_and_is_deterministic(project in project()) {
        let dir = tempfile::tempdir().expect("tempdir");
        materialize(&project, dir.path());
        let first = strata::run_compile(dir.path(), None, "dev", &[], &[], &test_env());
        let second = strata::run_compile(dir.path(), None, "dev", &[], &[], &test_env());
        prop_assert_eq!(first.manifest.as_ref().map(|m| m.to_json()), second.manifest.as_ref().map(|m| m.to_json()));
        prop_assert_eq!(first.diagnostics.render(false), second.diagnostics.render(false));
        for diagnostic in first.diagnostics.iter() {
            if let (Some(file), Some(line)) = (&diagnostic.file, diagnostic.line) {
                let text = std::fs::read_to_string(dir.path().join(file)).unwrap_or_default();
                // The end of the file (after its last newline) is a valid place for "unexpected
                // end of input".
                let last_line = text.split('\n').count();
                prop_assert!(line as usize <= last_line, "{diagnostic} is past the end of {}", file.display());
            }
        }
        if let Some(manifest) = &first.manifest {
            prop_assert!(!first.diagnostics.has_errors());
            for node in manifest.nodes.values() {
                for parent in &node.depends_on {
                    prop_assert!(manifest.nodes.contains_key(parent), "{} depends on unknown {parent}", node.unique_id);
                }
            }
            prop_assert!(manifest.dag().find_cycle().is_none());
        }
    }

    #[test]
    fn arbitrary_yaml_and_sql_never_panic(yaml in "\\PC{0,200}", sql in "\\PC{0,200}") {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "dbt_project.yml", &format!("name: p\n{yaml}"));
        write(dir.path(), "models/m.sql", &sql);
        write(dir.path(), "models/s.yml", &yaml);
        let _ = strata::run_compile(dir.path(), Some(&yaml), "dev", std::slice::from_ref(&sql), &[], &test_env());
    }
}
