//! Packages, dispatch and `return()` through the renderer, as a node's template uses them.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::diagnostics::SourceText;
use crate::jinja::{MacroPackage, RenderInputs, Renderer};
use crate::project::SqlFile;

fn file(path: &str, text: &str) -> SqlFile {
    SqlFile {
        name: String::from("macros"),
        folders: Vec::new(),
        source: SourceText::new(path, text),
    }
}

/// A project `shop` with one macro file, and a package `helpers` written for these tests.
fn render_with(
    project_macros: &str,
    search_orders: BTreeMap<String, Vec<String>>,
    model: &str,
) -> Result<String, String> {
    let project = [file("macros/shop.sql", project_macros)];
    let helpers = [file(
        "dbt_packages/helpers/macros/helpers.sql",
        "{% macro columns_of(names) %}{% set out = [] %}{% for n in names %}{% do out.append(n | upper) %}{% endfor %}{{ return(out) }}{% endmacro %}
         {% macro select_list(names) %}{{ return(columns_of(names) | join(', ')) }}{% endmacro %}
         {% macro qualified_list(names) %}{{ helpers.select_list(names) }}{% endmacro %}
         {% macro surrogate(fields) %}{{ return(adapter.dispatch('surrogate', 'helpers')(fields)) }}{% endmacro %}
         {% macro default__surrogate(fields) %}md5({{ dbt.concat(fields) }}){% endmacro %}
         {% macro early(flag) %}{% if flag %}{{ return('early') }}{% endif %}{{ exceptions.raise_compiler_error('not reached when flag') }}{% endmacro %}
         {% macro _checked(value) %}{% if value < 0 %}{{ exceptions.raise_compiler_error('negative') }}{% endif %}{{ return(value * 2) }}{% endmacro %}
         {% macro doubled(value) %}{{ helpers._checked(value) }}{% endmacro %}
         {% test positive(model, column_name) %}select * from {{ model }} where {{ column_name }} <= 0{% endtest %}",
    )];
    let packages = [
        MacroPackage {
            name: "shop",
            files: &project,
        },
        MacroPackage {
            name: "helpers",
            files: &helpers,
        },
    ];
    let mut errors = Vec::new();
    let mut renderer = Renderer::new(&packages, search_orders, None, &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    let source = SourceText::new(PathBuf::from("models/m.sql"), model);
    renderer.add(&source, "m").map_err(|d| d.message.clone())?;
    let inputs = Arc::new(RenderInputs {
        project_name: String::from("shop"),
        ..RenderInputs::default()
    });
    renderer
        .render(&source, "m", &inputs, false, None)
        .map(|rendered| rendered.sql)
        .map_err(|d| d.message.clone())
}

fn render(model: &str) -> String {
    render_with("", BTreeMap::new(), model).unwrap()
}

#[test]
fn package_macros_are_called_through_their_namespace() {
    assert_eq!(render("{{ helpers.select_list(['a', 'b']) }}"), "A, B");
    assert_eq!(render("{{ helpers.qualified_list(['a']) }}"), "A");
}

#[test]
fn return_hands_back_values_and_ends_the_macro() {
    assert_eq!(
        render("{% set cols = helpers.columns_of(['x', 'y']) %}{{ cols | length }}:{{ cols[1] }}"),
        "2:Y"
    );
    assert_eq!(render("{{ helpers.early(true) }}"), "early");
    let error = render_with("", BTreeMap::new(), "{{ helpers.early(false) }}").unwrap_err();
    assert!(error.contains("not reached"), "{error}");
}

#[test]
fn dispatch_finds_the_default_then_the_projects_own_implementation() {
    assert_eq!(
        render("{{ helpers.surrogate(['a', 'b']) }}"),
        "md5(concat(a, b))"
    );
    let overriding =
        "{% macro strata__surrogate(fields) %}sha256({{ fields | join('||') }}){% endmacro %}";
    assert_eq!(
        render_with(
            overriding,
            BTreeMap::new(),
            "{{ helpers.surrogate(['a', 'b']) }}"
        )
        .unwrap(),
        "sha256(a||b)"
    );
    // A `dispatch:` search order without the project skips its implementation.
    let orders = BTreeMap::from([(String::from("helpers"), vec![String::from("helpers")])]);
    assert_eq!(
        render_with(overriding, orders, "{{ helpers.surrogate(['a']) }}").unwrap(),
        "md5(concat(a))"
    );
}

#[test]
fn dbt_macros_and_project_macros_are_callable_unqualified_and_qualified() {
    assert_eq!(
        render("{{ type_string() }}|{{ dbt.type_int() }}"),
        "varchar|integer"
    );
    let project = "{% macro cents(column) %}({{ column }} * 100){% endmacro %}";
    assert_eq!(
        render_with(
            project,
            BTreeMap::new(),
            "{{ cents('x') }} {{ shop.cents('y') }}"
        )
        .unwrap(),
        "(x * 100) (y * 100)"
    );
    // The project's implementation of a dbt macro wins, as in dbt.
    let own_hash = "{% macro default__hash(field) %}own({{ field }}){% endmacro %}";
    assert_eq!(
        render_with(own_hash, BTreeMap::new(), "{{ dbt.hash('x') }}").unwrap(),
        "own(x)"
    );
}

#[test]
fn macros_whose_names_start_with_an_underscore_are_reachable_through_their_package() {
    // Jinja keeps such names private to their template; dbt_utils calls its own
    // `dbt_utils._is_relation(…)`.
    assert_eq!(render("{{ helpers.doubled(4) }}"), "8");
    assert_eq!(render("{{ helpers._checked(5) }}"), "10");
}

#[test]
fn unknown_package_macros_are_named_with_a_suggestion() {
    let error = render_with("", BTreeMap::new(), "{{ helpers.select_lst(['a']) }}").unwrap_err();
    assert!(
        error.contains("package 'helpers' has no macro 'select_lst'"),
        "{error}"
    );
    assert!(error.contains("select_list"), "{error}");
    let error = render_with("", BTreeMap::new(), "{{ return(1) }}").unwrap_err();
    assert!(error.contains("only allowed inside a macro"), "{error}");
}

#[test]
fn python_jinja_that_dbt_accepts() {
    assert_eq!(render("{% set interval = +1 %}{{ interval }}"), "1");
    assert_eq!(
        render("{% set xs = [] %}{% do xs.append(1) if true else none %}{{ xs | length }}"),
        "1"
    );
    assert_eq!(render("{{ var('missing', none) is none }}"), "True");
    assert_eq!(
        render("{{ 'a,b'.split(',') | length }}|{{ {'k': 1}.items() | list | length }}"),
        "2|1"
    );
    assert_eq!(
        render("{{ api.Relation.create(database='db', schema='gold', identifier='Orders') }}"),
        "gold.\"Orders\""
    );
    assert_eq!(
        render(
            "{% set r = api.Relation.create(schema='s', identifier='t') %}{{ r.include(database=false).render() }} {{ r.is_table }} {{ target.profile_name }}"
        ),
        "s.t True strata"
    );
    // dbt_utils' `_is_relation` check: a relation is a mapping whose metadata type ends in
    // `Relation`.
    assert_eq!(
        render(
            "{% set r = api.Relation.create(schema='s', identifier='t') %}{{ r is mapping and r.get('metadata', {}).get('type', '').endswith('Relation') }} {{ r.get('nope', 'd') }}"
        ),
        "True d"
    );
}
