//! The Jinja environment of one project: dbt's functions and globals, each package's macro
//! template, namespaces, `adapter` and `api`, and compile-time queries.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use minijinja::value::{Kwargs, Rest, Serde};
use minijinja::{Environment, State, Value};

use super::adapter;
use super::namespaces::{self, DBT_NAMESPACE, Forward, MacroCatalog, Namespace};
use super::{
    BUILTIN_FUNCTIONS, CompileQueries, ConfigObject, ExceptionsObject, FUEL_PER_RENDER,
    MacroFileSpan, MacroPackage, enter, env_var_function, filters, is_incremental_function,
    jinja_diagnostic, jinja_diagnostic_at, log_function, macro_names, mutable, queries,
    ref_function, rewrite_template, source_function, var_function,
};
use crate::diagnostics::{ProjectDiagnostic, SourceText};
use crate::project::SqlFile;

/// An environment with dbt's functions and globals, before any macro.
pub(super) fn builtin_environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_fuel(Some(FUEL_PER_RENDER));
    // SQL is never escaped, whatever a template's name ends with (minijinja would escape
    // the output of a `.yml` template as JSON).
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.set_recursion_limit(200);
    // Python's string, list and dict methods (`.upper()`, `.split()`, `.items()`), which dbt's
    // Jinja allows.
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
        .keep_trailing_newline(true)
        .build()
    {
        env.set_syntax(syntax);
    }
    env.add_function("__strata_enter", enter);
    env.add_function("__strata_module", namespaces::register_module);
    env.add_function("__strata_wrap", namespaces::wrap);
    env.add_function("__strata_list", mutable::new_list);
    env.add_function("__strata_eval", |value: Value| value);
    env.add_filter("as_bool", filters::as_bool);
    env.add_filter("as_number", filters::as_number);
    env.add_filter("as_text", filters::as_text);
    env.add_filter("as_native", filters::as_native);
    env.add_function("__strata_dict", mutable::new_dict);
    env.add_function("return", namespaces::return_function);
    env.add_function("ref", ref_function);
    env.add_function("source", source_function);
    env.add_function("var", var_function);
    env.add_function("env_var", env_var_function);
    env.add_function("is_incremental", is_incremental_function);
    env.add_function("log", log_function);
    env.add_global("config", Value::from_object(ConfigObject));
    env.add_global("exceptions", Value::from_object(ExceptionsObject));
    env.add_global("execute", Value::from(true));
    env.add_global("modules", Value::from_object(super::modules::Modules));
    env.add_global(
        "flags",
        Value::from(Serde(BTreeMap::from([("FULL_REFRESH", false)]))),
    );
    env
}

/// `run_query`, `statement` and `load_result`, answered by `queries`.
pub(super) fn register_queries(
    env: &mut Environment<'static>,
    queries: Option<Arc<dyn CompileQueries>>,
) {
    let runner = queries::Runner(queries);
    let for_run_query = runner.clone();
    env.add_function("run_query", move |sql: String| {
        queries::run_query(&for_run_query, &sql)
    });
    env.add_function(
        "statement",
        move |state: &mut State, args: Rest<Value>, kwargs: Kwargs| {
            queries::statement(&runner, state, args, kwargs)
        },
    );
    env.add_function("load_result", queries::load_result);
}

/// One package's macro files as one template's text.
pub(super) struct CombinedMacros {
    pub(super) text: String,
    pub(super) spans: Vec<MacroFileSpan>,
    /// The macros it defines.
    pub(super) names: BTreeSet<String>,
}

/// Concatenates `package`'s macro files into the text of template `template`, leaving out
/// files with syntax errors and second definitions of a name (both reported).
pub(super) fn combine_macro_files(
    env: &mut Environment<'static>,
    package: &MacroPackage<'_>,
    template: &str,
    diagnostics: &mut Vec<ProjectDiagnostic>,
) -> CombinedMacros {
    let mut combined = CombinedMacros {
        text: String::new(),
        spans: Vec::new(),
        names: BTreeSet::new(),
    };
    let mut first_definitions: BTreeMap<String, (SourceText, usize)> = BTreeMap::new();
    for file in package.files {
        // Custom materializations (`{% materialization %}`) are not run by Strata; the
        // package's macros around them are still usable.
        let (without_materializations, _) =
            crate::blocks::blank_blocks(&file.source.text, "materialization");
        let (text, edits) = rewrite_template(&without_materializations);
        let span = MacroFileSpan {
            template: template.to_string(),
            start: 0,
            end: text.len(),
            source: file.source.clone(),
            edits,
        };
        // Check each file alone first, so one broken file does not hide all macros.
        if let Err(err) = env.template_from_named_str("__check__", &text) {
            diagnostics.push(match err.range() {
                Some(range) => jinja_diagnostic_at(
                    &err,
                    &file.source,
                    span.original_offset(range.start),
                    span.original_offset(range.end),
                ),
                None => jinja_diagnostic(&err, &file.source, |offset| offset),
            });
            continue;
        }
        for (name, offset) in macro_names(&text) {
            let offset = span.original_offset(offset);
            if let Some((first, first_offset)) = first_definitions.get(&name) {
                diagnostics.push(duplicate_macro(&name, file, offset, first, *first_offset));
                continue;
            }
            first_definitions.insert(name.clone(), (file.source.clone(), offset));
            combined.names.insert(name);
        }
        let start = combined.text.len();
        combined.text.push_str(&text);
        combined.spans.push(MacroFileSpan {
            start,
            end: combined.text.len(),
            ..span
        });
        combined.text.push('\n');
    }
    combined
}

/// The error for a second definition of macro `name` in one package.
fn duplicate_macro(
    name: &str,
    file: &SqlFile,
    offset: usize,
    first: &SourceText,
    first_offset: usize,
) -> ProjectDiagnostic {
    let (line, _) = first.line_column_of(first_offset);
    let shown = name
        .strip_prefix("test_")
        .filter(|_| !file.source.text[offset..].starts_with(name))
        .unwrap_or(name);
    ProjectDiagnostic::error(
        "strata::duplicate_macro",
        format!("macro '{name}' is defined twice"),
    )
    .at_range(&file.source, offset, offset + shown.len())
    .with_hint(format!(
        "it is also defined at {}:{line}; rename or remove one",
        first.path.display()
    ))
}

/// Makes every package a namespace (`dbt_utils.star(…)`) and macros callable unqualified
/// (the root project's and dbt's everywhere, a package's from its own nodes), and adds `api`.
pub(super) fn register_namespaces(
    env: &mut Environment<'static>,
    packages: &[MacroPackage<'_>],
    catalog: &Arc<MacroCatalog>,
) {
    let unqualified: BTreeSet<&String> = [catalog.root.as_str(), DBT_NAMESPACE]
        .iter()
        .filter_map(|namespace| catalog.names.get(*namespace))
        .flatten()
        .collect();
    for name in &unqualified {
        if !BUILTIN_FUNCTIONS.contains(&name.as_str()) {
            env.add_global(
                name.to_string(),
                Value::from_object(Forward::new(name, catalog)),
            );
        }
    }
    // An installed package's macros are callable unqualified from that package's own nodes
    // (which one a call reaches is decided per render by the node's package); they never
    // replace a global of the environment.
    let package_macros: BTreeSet<&String> = catalog.names.values().flatten().collect();
    let globals: BTreeSet<String> = env.globals().map(|(name, _)| name.to_string()).collect();
    for name in package_macros.difference(&unqualified) {
        if !globals.contains(name.as_str()) {
            env.add_global(
                name.to_string(),
                Value::from_object(Forward::new(name, catalog)),
            );
        }
    }
    let names = packages.iter().map(|package| package.name);
    for name in names.chain([DBT_NAMESPACE]) {
        env.add_global(
            name.to_string(),
            Value::from_object(Namespace::new(name, catalog)),
        );
    }
    env.add_global("api", Value::from_object(adapter::Api));
}
