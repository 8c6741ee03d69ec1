//! Rendering of models, tests and macros with minijinja, with dbt's functions: `ref`, `source`,
//! `config`, `var`, `env_var`, `is_incremental`, `this`, `target`, and user macros.
//!
//! A project's macros are concatenated into one template, `__macros__`, so that every macro can
//! call every other one, as in dbt. Each node template starts with a one-line prelude that hands
//! the node's [`RenderScope`] to the render state and imports the macros; functions find the
//! scope through the state, which also works inside macros called from the node.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex};

use minijinja::value::{Kwargs, Object, Rest, Serde};
use minijinja::{Environment, Error, ErrorKind, State, Value};
use serde::Serialize;

use crate::config::{ConfigLayer, NodeConfig, did_you_mean};
use environment::{
    builtin_environment, combine_macro_files, register_namespaces, register_queries,
};
use literals::{Edits, mutable_literals};
use namespaces::{DBT_NAMESPACE, MacroCatalog};

mod adapter;
mod environment;
mod filters;
mod literals;
mod modules;
mod mutable;
mod namespaces;
mod queries;
mod varargs;

use crate::diagnostics::{ProjectDiagnostic, SourceText};
use crate::project::{SqlFile, is_identifier};
pub use queries::{CompileQueries, QueryTable};

/// Name of the template holding every macro of the project.
const MACROS_TEMPLATE: &str = "__macros__";

/// Upper bound on the work of one render, so that a runaway loop in a template fails instead
/// of hanging the compiler.
const FUEL_PER_RENDER: u64 = 50_000_000;

/// A table or view in the warehouse, as `ref()` and `source()` render it: `schema.identifier`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Relation {
    /// Schema (for models, the layer by default); empty for an ephemeral CTE.
    pub schema: String,
    /// Table name.
    pub identifier: String,
}

impl Relation {
    /// Creates a relation.
    pub fn new(schema: impl Into<String>, identifier: impl Into<String>) -> Self {
        Self {
            schema: schema.into(),
            identifier: identifier.into(),
        }
    }
}

/// Quotes an identifier only when it would not survive unquoted (DataFusion folds unquoted
/// identifiers to lowercase).
pub fn quote_identifier(name: &str) -> String {
    if is_identifier(name) && name.chars().all(|c| !c.is_ascii_uppercase()) {
        name.to_string()
    } else {
        double_quoted(name)
    }
}

/// `name` as a quoted identifier, always.
fn double_quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl fmt::Display for Relation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.schema.is_empty() {
            f.write_str(&quote_identifier(&self.identifier))
        } else {
            write!(
                f,
                "{}.{}",
                quote_identifier(&self.schema),
                quote_identifier(&self.identifier)
            )
        }
    }
}

impl Object for Relation {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match key.as_str()? {
            "schema" => Some(Value::from(self.schema.clone())),
            "identifier" | "name" | "table" => Some(Value::from(self.identifier.clone())),
            "database" => Some(Value::from("strata")),
            "is_table" => Some(Value::from(true)),
            "is_view" | "is_cte" => Some(Value::from(false)),
            // What dbt_utils' `_is_relation` checks: the type's name ends in `Relation`.
            "metadata" => Some(Value::from(BTreeMap::from([(
                "type",
                Value::from("StrataRelation"),
            )]))),
            _ => None,
        }
    }

    /// dbt's relation methods that packages call: `render()` gives the rendered name;
    /// `include(…)`, `quote(…)` and `incorporate(…)` give the relation back (a warehouse has one
    /// database and Strata quotes what needs quoting); `get(key, default)` reads it as the
    /// mapping dbt's relations also are.
    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        match method {
            "render" => Ok(Value::from(self.to_string())),
            "get" => {
                let (key, default): (Value, Option<Value>) = minijinja::value::from_args(args)?;
                Ok(self.get_value(&key).or(default).unwrap_or(Value::from(())))
            }
            "include" | "quote" | "incorporate" => Ok(Value::from_object(self.as_ref().clone())),
            other => Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("a relation has no method '{other}'"),
            )),
        }
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result
    where
        Self: Sized + 'static,
    {
        fmt::Display::fmt(self.as_ref(), f)
    }
}

/// What every render of one compile shares: names that `ref()` and `source()` resolve to,
/// variables, the environment and the target.
#[derive(Debug, Default, Clone)]
pub struct RenderInputs {
    /// The project's name (the package of `ref('package', 'model')`).
    pub project_name: String,
    /// Project vars (`vars:` of the project file), before command-line vars.
    pub project_vars: serde_json::Map<String, serde_json::Value>,
    /// Vars from `--vars`, which win over project vars.
    pub cli_vars: serde_json::Map<String, serde_json::Value>,
    /// Vars that installed packages declare in their project files: defaults for what neither
    /// `--vars` nor the project sets.
    pub package_vars: serde_json::Map<String, serde_json::Value>,
    /// Environment variables visible to `env_var()`.
    pub env: BTreeMap<String, String>,
    /// `target.name`.
    pub target_name: String,
    /// `target.schema`: the schema of models outside any layer folder.
    pub target_schema: String,
    /// Relations of models and seeds by name.
    pub relations: BTreeMap<String, Relation>,
    /// The package of each model, seed and snapshot of an installed package, by name (nodes
    /// of the root project are not listed): `ref('package', 'model')` checks it, and a
    /// package's nodes call its macros unqualified and see its scoped vars.
    pub node_packages: BTreeMap<String, String>,
    /// Names of disabled models and seeds, for a precise error.
    pub disabled: BTreeSet<String>,
    /// Relations of source tables by (source, table).
    pub sources: BTreeMap<(String, String), Relation>,
    /// Configuration of each node before its own `config()` call, for `config.get`.
    pub base_configs: BTreeMap<String, Vec<ConfigLayer>>,
    /// Versioned models by name: `ref('m')` reaches the latest version, `ref('m', v=1)` one.
    pub versions: BTreeMap<String, ModelVersions>,
    /// Columns known without the warehouse (name, declared type or empty), by relation: a
    /// seed's CSV header, the columns a property file declares for a model, snapshot or
    /// source. `adapter.get_columns_in_relation` answers with them for a table not built yet.
    pub declared_columns: BTreeMap<Relation, Vec<(String, String)>>,
}

/// The versions of a versioned model, each by the name (file stem) of its node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelVersions {
    /// The node of the latest version.
    pub latest: String,
    /// The node of each version, by version (`1`, `2`).
    pub nodes: BTreeMap<String, String>,
}

impl RenderInputs {
    /// Looks up a variable for a node of `package`: `--vars`, then the package's scope in
    /// the project's `vars:`, then global project vars, then what packages declare.
    pub fn var(&self, package: &str, name: &str) -> Option<&serde_json::Value> {
        self.cli_vars
            .get(name)
            .or_else(|| {
                self.project_vars
                    .get(package)
                    .and_then(|scoped| scoped.as_object())
                    .and_then(|scoped| scoped.get(name))
            })
            .or_else(|| self.project_vars.get(name))
            .or_else(|| self.package_vars.get(name))
    }

    /// The package of node `name`: an installed package's, else the root project.
    pub fn package_of(&self, name: &str) -> &str {
        self.node_packages.get(name).unwrap_or(&self.project_name)
    }
}

/// A reference made by a node while it rendered.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dependency {
    /// `ref('name')` (a model or a seed).
    Ref(String),
    /// `source('source', 'table')`.
    Source(String, String),
}

/// What a render recorded: references and `config()` settings.
#[derive(Debug, Default, Clone)]
pub struct Captured {
    /// `ref()` and `source()` calls, in call order, deduplicated.
    pub dependencies: Vec<Dependency>,
    /// Settings from `{{ config(...) }}` calls.
    pub config: ConfigLayer,
    /// Messages from `log()` and `exceptions.warn()`.
    pub messages: Vec<String>,
    /// Why the node must be compiled again once its parents are built: it asked the warehouse
    /// about a table that does not exist yet (the first such question).
    pub deferred: Option<String>,
}

/// Per-render state of one node, reachable from every function through the render state.
#[derive(Debug)]
pub struct RenderScope {
    inputs: Arc<RenderInputs>,
    node: String,
    /// The package of the node: its unqualified macro calls and vars are the package's.
    package: String,
    is_incremental: bool,
    captured: Mutex<Captured>,
}

impl Object for RenderScope {}

impl RenderScope {
    fn new(
        inputs: &Arc<RenderInputs>,
        node: &str,
        package: &str,
        is_incremental: bool,
    ) -> Arc<RenderScope> {
        Arc::new(RenderScope {
            inputs: inputs.clone(),
            node: node.to_string(),
            package: package.to_string(),
            is_incremental,
            captured: Mutex::new(Captured::default()),
        })
    }

    /// The package of the node being rendered.
    pub(crate) fn package(&self) -> &str {
        &self.package
    }

    /// What the render recorded so far.
    fn captured(&self) -> Captured {
        self.captured
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    /// Notes that the render asked about a table not built yet, and why (the first reason
    /// is kept).
    pub(crate) fn defer(&self, reason: String) {
        let mut captured = self
            .captured
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        captured.deferred.get_or_insert(reason);
    }

    fn record(&self, dependency: Dependency) {
        let mut captured = self
            .captured
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if !captured.dependencies.contains(&dependency) {
            captured.dependencies.push(dependency);
        }
    }
}

pub(crate) fn scope(state: &State) -> Result<Arc<RenderScope>, Error> {
    state
        .get_extension::<Value>()
        .and_then(|value| value.downcast_object::<RenderScope>())
        .ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidOperation,
                "strata functions need a node to render",
            )
        })
}

fn enter(state: &mut State, scope: Value) -> String {
    state.get_or_insert_extension(scope);
    String::new()
}

fn ref_function(state: &State, args: Rest<String>, kwargs: Kwargs) -> Result<Value, Error> {
    let scope = scope(state)?;
    let version: Option<Value> = match kwargs.get::<Option<Value>>("version")? {
        Some(version) => Some(version),
        None => kwargs.get::<Option<Value>>("v")?,
    };
    let (package, name) = match args.as_slice() {
        [name] => (None, name.clone()),
        [package, name] => (Some(package), name.clone()),
        _ => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                "ref() takes a model name, or a package and a model name",
            ));
        }
    };
    let name = versioned_node(&scope.inputs, name, version)?;
    if let Some(package) = package {
        check_ref_package(&scope.inputs, package, &name)?;
    }
    if let Some(relation) = scope.inputs.relations.get(&name) {
        scope.record(Dependency::Ref(name));
        return Ok(Value::from_object(relation.clone()));
    }
    if scope.inputs.disabled.contains(&name) {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("'{name}' is disabled (enabled: false), so it cannot be referenced"),
        ));
    }
    let hint = did_you_mean(&name, scope.inputs.relations.keys().map(String::as_str));
    Err(Error::new(
        ErrorKind::InvalidOperation,
        format!("unknown model or seed '{name}'{hint}"),
    ))
}

/// `ref('package', 'name')`: the node must belong to that package.
fn check_ref_package(inputs: &RenderInputs, package: &str, name: &str) -> Result<(), Error> {
    let owner = inputs.package_of(name);
    let known = inputs.relations.contains_key(name) || inputs.disabled.contains(name);
    if owner == package || !known {
        // An unknown name is reported below, with the closest names.
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::InvalidOperation,
        format!(
            "ref('{package}', '{name}'): '{name}' belongs to package '{owner}', not '{package}'"
        ),
    ))
}

/// The node `ref(name, v=version)` reaches: a version of a versioned model (the latest when
/// no version is given), or the model itself.
fn versioned_node(
    inputs: &RenderInputs,
    name: String,
    version: Option<Value>,
) -> Result<String, Error> {
    match (inputs.versions.get(&name), version) {
        (None, None) => Ok(name),
        (None, Some(version)) => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("ref('{name}', v={version}) names a version, but '{name}' has no versions"),
        )),
        (Some(versions), None) => Ok(versions.latest.clone()),
        (Some(versions), Some(version)) => {
            let version = version.to_string();
            versions.nodes.get(&version).cloned().ok_or_else(|| {
                let known: Vec<&str> = versions.nodes.keys().map(String::as_str).collect();
                Error::new(
                    ErrorKind::InvalidOperation,
                    format!(
                        "model '{name}' has no version {version}; its versions are {}",
                        known.join(", ")
                    ),
                )
            })
        }
    }
}

fn source_function(state: &State, source: String, table: String) -> Result<Value, Error> {
    let scope = scope(state)?;
    let key = (source.clone(), table.clone());
    if let Some(relation) = scope.inputs.sources.get(&key) {
        scope.record(Dependency::Source(source, table));
        return Ok(Value::from_object(relation.clone()));
    }
    let same_source: Vec<&str> = scope
        .inputs
        .sources
        .keys()
        .filter(|(name, _)| *name == source)
        .map(|(_, table)| table.as_str())
        .collect();
    let message = if same_source.is_empty() {
        let names: BTreeSet<&str> = scope
            .inputs
            .sources
            .keys()
            .map(|(name, _)| name.as_str())
            .collect();
        format!("unknown source '{source}'{}", did_you_mean(&source, names))
    } else {
        format!(
            "source '{source}' has no table '{table}'{}",
            did_you_mean(&table, same_source)
        )
    };
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

/// The default argument of `var()` / `env_var()`: given (even as `none`) or not.
fn default_argument(rest: &[Value]) -> Result<Option<Value>, Error> {
    match rest {
        [] => Ok(None),
        [default] => Ok(Some(default.clone())),
        _ => Err(Error::from(ErrorKind::TooManyArguments)),
    }
}

fn var_function(state: &State, name: String, rest: Rest<Value>) -> Result<Value, Error> {
    let scope = scope(state)?;
    match (
        scope.inputs.var(scope.package(), &name),
        default_argument(&rest)?,
    ) {
        (Some(serde_json::Value::String(text)), _) if is_template(text) => {
            rendered_var(state, &scope, &name, text)
        }
        (Some(value), _) => Ok(Value::from(Serde(value))),
        (None, Some(default)) => Ok(default),
        (None, None) => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!(
                "required var '{name}' is not set; set it under 'vars:' in the project file or pass --vars '{{{name}: ...}}'"
            ),
        )),
    }
}

fn is_template(text: &str) -> bool {
    text.contains("{{") || text.contains("{%")
}

/// A var whose value is Jinja (`"{{ source('crm', 'company') }}"`, as packages declare them)
/// is rendered where `var()` is called, as dbt does: its `ref()` and `source()` count as
/// the node's.
fn rendered_var(
    state: &State,
    scope: &Arc<RenderScope>,
    name: &str,
    text: &str,
) -> Result<Value, Error> {
    let template = format!("{{{{ __strata_enter(__strata_scope) }}}}{text}");
    let context = minijinja::context! {
        __strata_scope => Value::from_dyn_object(scope.clone()),
        target => target(&scope.inputs),
    };
    state
        .env()
        .render_str(&template, context)
        .map(Value::from_safe_string)
        .map_err(|err| {
            Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "var '{name}' holds Jinja that does not render: {}",
                    err.detail().unwrap_or("invalid template")
                ),
            )
        })
}

fn env_var_function(state: &State, name: String, rest: Rest<Value>) -> Result<Value, Error> {
    let scope = scope(state)?;
    match (scope.inputs.env.get(&name), default_argument(&rest)?) {
        (Some(value), _) => Ok(Value::from(value.clone())),
        (None, Some(default)) => Ok(default),
        (None, None) => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("environment variable '{name}' is not set and env_var() was given no default"),
        )),
    }
}

fn is_incremental_function(state: &State) -> Result<bool, Error> {
    Ok(scope(state)?.is_incremental)
}

fn log_function(state: &State, message: Value, _kwargs: Kwargs) -> Result<String, Error> {
    let scope = scope(state)?;
    let mut captured = scope
        .captured
        .lock()
        .unwrap_or_else(|poison| poison.into_inner());
    captured.messages.push(message.to_string());
    Ok(String::new())
}

/// `config`: callable as `config(key=value, …)`, with `config.get(key, default)` and
/// `config.require(key)` methods.
#[derive(Debug)]
struct ConfigObject;

impl Object for ConfigObject {
    fn call(self: &Arc<Self>, state: &mut State<'_, '_>, args: &[Value]) -> Result<Value, Error> {
        let scope = scope(state)?;
        let mut captured = scope
            .captured
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        for arg in args {
            let settings: serde_json::Value = serde_json::to_value(arg).map_err(|err| {
                Error::new(
                    ErrorKind::InvalidOperation,
                    format!("config() value: {err}"),
                )
            })?;
            let serde_json::Value::Object(settings) = settings else {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    "config() takes keyword arguments, such as config(materialized='table')",
                ));
            };
            for (key, value) in settings {
                if key == "__minijinja_ValueKind" {
                    continue;
                }
                captured.config.set(&key, &value).map_err(|message| {
                    Error::new(ErrorKind::InvalidOperation, format!("config(): {message}"))
                })?;
            }
        }
        Ok(Value::from(""))
    }

    fn call_method(
        self: &Arc<Self>,
        state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        let scope = scope(state)?;
        let (key, default): (String, Option<Value>) = minijinja::value::from_args(args)?;
        let resolved = {
            let captured = scope
                .captured
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            let base = scope.inputs.base_configs.get(&scope.node);
            let layers = base
                .into_iter()
                .flatten()
                .chain(std::iter::once(&captured.config));
            NodeConfig::resolve(crate::config::Materialization::View, layers)
        };
        let value = resolved.get(&key).filter(|value| !value.is_null());
        match (method, value, default) {
            ("get", Some(value), _) => Ok(Value::from(Serde(&value))),
            ("get", None, default) => Ok(default.unwrap_or(Value::from(()))),
            ("require", Some(value), _) => Ok(Value::from(Serde(&value))),
            ("require", None, _) => Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("config '{key}' is required but not set"),
            )),
            _ => Err(Error::new(
                ErrorKind::UnknownMethod,
                format!("config has no method '{method}'"),
            )),
        }
    }
}

/// `exceptions.raise_compiler_error(message)` and `exceptions.warn(message)`.
#[derive(Debug)]
struct ExceptionsObject;

impl Object for ExceptionsObject {
    fn call_method(
        self: &Arc<Self>,
        state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        let (message,): (String,) = minijinja::value::from_args(args)?;
        match method {
            "raise_compiler_error" => Err(Error::new(ErrorKind::InvalidOperation, message)),
            "warn" => {
                let scope = scope(state)?;
                let mut captured = scope
                    .captured
                    .lock()
                    .unwrap_or_else(|poison| poison.into_inner());
                captured.messages.push(message);
                Ok(Value::from(""))
            }
            _ => Err(Error::new(
                ErrorKind::UnknownMethod,
                format!("exceptions has no method '{method}'"),
            )),
        }
    }
}

/// Where a macro file starts inside the combined macro template.
#[derive(Debug, Clone)]
struct MacroFileSpan {
    /// The template of the file's package.
    template: String,
    start: usize,
    end: usize,
    source: SourceText,
    /// Edits made by [`rewrite_template`], to map positions back to the file.
    edits: Vec<Edits>,
}

impl MacroFileSpan {
    /// Maps an offset in the rewritten text (relative to the file's start) to the file.
    fn original_offset(&self, rewritten: usize) -> usize {
        original_offset(&self.edits, rewritten)
    }
}

/// Maps an offset in a text rewritten by the passes whose edits are `passes` (first pass
/// first) back to the original text.
fn original_offset(passes: &[Edits], rewritten: usize) -> usize {
    passes.iter().rev().fold(rewritten, |offset, edits| {
        let delta = edits
            .iter()
            .take_while(|(at, _)| *at <= offset)
            .last()
            .map_or(0, |(_, delta)| *delta);
        offset.saturating_add_signed(-delta)
    })
}

/// A template's text as Strata renders it: literals made mutable, test blocks made macros,
/// macros reading `varargs` given room for extra arguments.
fn rewrite_template(text: &str) -> (String, Vec<Edits>) {
    let (text, literal_edits) = mutable_literals(text);
    let (text, test_edits) = rewrite_test_blocks(&text);
    let (text, varargs_edits) = varargs::rewrite_varargs(&text);
    (text, vec![literal_edits, test_edits, varargs_edits])
}

/// Rewrites dbt's `{% test name(...) %}` / `{% endtest %}` blocks into macros named
/// `test_name`, returning the text and the edits (position after each edit in the new text,
/// cumulative growth) so that error positions can be mapped back.
pub fn rewrite_test_blocks(text: &str) -> (String, Vec<(usize, isize)>) {
    let mut out = String::with_capacity(text.len());
    let mut edits = Vec::new();
    let mut growth: isize = 0;
    let mut rest = 0usize;
    let bytes = text.as_bytes();
    while let Some(found) = text[rest..].find("{%") {
        let mut at = rest + found + 2;
        if matches!(bytes.get(at), Some(b'-' | b'+')) {
            at += 1;
        }
        at = skip_whitespace(bytes, at);
        let word_end = identifier_end(text, at);
        let (replacement, replaced_end) = match &text[at..word_end] {
            "test" if bytes.get(word_end).is_some_and(u8::is_ascii_whitespace) => {
                ("macro test_", skip_whitespace(bytes, word_end))
            }
            "endtest" => ("endmacro", word_end),
            _ => {
                out.push_str(&text[rest..at]);
                rest = at;
                continue;
            }
        };
        out.push_str(&text[rest..at]);
        out.push_str(replacement);
        growth += replacement.len() as isize - (replaced_end - at) as isize;
        edits.push((out.len(), growth));
        rest = replaced_end;
    }
    out.push_str(&text[rest..]);
    (out, edits)
}

/// The macros of one namespace: the root project or an installed package.
#[derive(Debug, Clone, Copy)]
pub struct MacroPackage<'a> {
    /// The package's name (`dbt_utils`), the namespace of `dbt_utils.star(…)`.
    pub name: &'a str,
    /// Its macro files, generic test definitions included.
    pub files: &'a [SqlFile],
}

/// A compiled Jinja environment for one project: builtins, macros and node templates.
pub struct Renderer {
    env: Environment<'static>,
    prelude: String,
    macro_files: Vec<MacroFileSpan>,
    /// Edits of each node template's text, by template name, to map errors back.
    node_edits: BTreeMap<String, Edits>,
    catalog: Arc<MacroCatalog>,
}

impl fmt::Debug for Renderer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Renderer")
            .field("macro_files", &self.macro_files.len())
            .finish()
    }
}

/// The result of rendering one node.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The rendered SQL.
    pub sql: String,
    /// What the render recorded.
    pub captured: Captured,
}

/// Strata's implementation of dbt's own macros, the `dbt` namespace.
const DBT_MACROS: &str = include_str!("jinja/dbt_macros.sql");

/// Functions that a macro of the same name must not replace.
const BUILTIN_FUNCTIONS: [&str; 10] = [
    "ref",
    "source",
    "var",
    "env_var",
    "is_incremental",
    "log",
    "config",
    "return",
    "adapter",
    "exceptions",
];

impl Renderer {
    /// Builds the environment with the macros of the root project (`packages[0]`) and of each
    /// installed package, and dbt's own. `search_orders` is the project file's `dispatch:`.
    /// Problems in macro files (syntax errors, a macro defined twice in one package) are
    /// returned as diagnostics; the other macros stay usable.
    pub fn new(
        packages: &[MacroPackage<'_>],
        search_orders: BTreeMap<String, Vec<String>>,
        queries: Option<Arc<dyn CompileQueries>>,
        diagnostics: &mut Vec<ProjectDiagnostic>,
    ) -> Renderer {
        let mut env = builtin_environment();
        register_queries(&mut env, queries.clone());
        let dbt_file = SqlFile {
            name: String::from("dbt_macros"),
            folders: Vec::new(),
            source: SourceText::new("<strata>/dbt_macros.sql", DBT_MACROS),
        };
        let dbt_files = [dbt_file];
        let builtin = MacroPackage {
            name: DBT_NAMESPACE,
            files: &dbt_files,
        };
        let mut catalog = MacroCatalog {
            root: packages
                .first()
                .map(|p| p.name.to_string())
                .unwrap_or_default(),
            names: BTreeMap::new(),
            search_orders,
        };
        let mut macro_files = Vec::new();
        let mut prelude = String::from("{{ __strata_enter(__strata_scope) }}");
        for (index, package) in std::iter::once(&builtin).chain(packages).enumerate() {
            let template = format!("{MACROS_TEMPLATE}/{}", package.name);
            let combined = combine_macro_files(&mut env, package, &template, diagnostics);
            if combined.names.is_empty() {
                continue;
            }
            let mut text = combined.text;
            for name in &combined.names {
                text.push_str(&format!("{{% set {name} = __strata_wrap({name}) %}}"));
                let exported = namespaces::exported_name(name);
                if exported != *name {
                    text.push_str(&format!("{{% set {exported} = {name} %}}"));
                }
            }
            if let Err(err) = env.add_template_owned(template.clone(), text) {
                // Files parsed alone but not together (e.g. an unclosed raw block); report once.
                if let Some(file) = combined.spans.first() {
                    diagnostics.push(jinja_diagnostic(&err, &file.source, |offset| offset));
                }
                continue;
            }
            prelude.push_str(&format!(
                "{{% import \"{template}\" as __strata_ns{index} %}}{{{{ __strata_module(\"{}\", __strata_ns{index}) }}}}",
                package.name
            ));
            macro_files.extend(combined.spans);
            catalog
                .names
                .entry(package.name.to_string())
                .or_default()
                .extend(combined.names);
        }
        let catalog = Arc::new(catalog);
        register_namespaces(&mut env, packages, &catalog);
        env.add_global(
            "adapter",
            Value::from_object(adapter::Adapter::new(&catalog, queries)),
        );
        Renderer {
            env,
            prelude,
            macro_files,
            node_edits: BTreeMap::new(),
            catalog,
        }
    }

    /// Adds a node's template, named for its file and the node.
    ///
    /// # Errors
    /// Returns a diagnostic at the syntax error.
    pub fn add(&mut self, source: &SourceText, node: &str) -> Result<(), Box<ProjectDiagnostic>> {
        let name = template_name(source, node);
        let (rewritten, edits) = mutable_literals(&source.text);
        self.node_edits.insert(name.clone(), edits);
        let text = format!("{}{rewritten}", self.prelude);
        self.env
            .add_template_owned(name, text)
            .map_err(|err| Box::new(self.diagnostic(&err, source, node)))
    }

    /// Renders a template added with [`Renderer::add`] for the node `node`.
    ///
    /// # Errors
    /// Returns a diagnostic at the failing expression (in the node or in a macro).
    pub fn render(
        &self,
        source: &SourceText,
        node: &str,
        inputs: &Arc<RenderInputs>,
        is_incremental: bool,
        this: Option<&Relation>,
    ) -> Result<Rendered, Box<ProjectDiagnostic>> {
        let name = template_name(source, node);
        let template = self
            .env
            .get_template(&name)
            .map_err(|err| Box::new(self.diagnostic(&err, source, node)))?;
        let scope = RenderScope::new(inputs, node, inputs.package_of(node), is_incremental);
        let context = minijinja::context! {
            __strata_scope => Value::from_dyn_object(scope.clone()),
            this => this.map(|relation| Value::from_object(relation.clone())),
            target => target(inputs),
            model => BTreeMap::from([("name", node.to_string())]),
        };
        let sql = template
            .render(context)
            .map_err(|err| Box::new(self.diagnostic(&err, source, node)))?;
        let captured = scope.captured();
        Ok(Rendered { sql, captured })
    }

    /// Renders a short Jinja string from a property or project file (a location, a schema),
    /// with `var()`, `env_var()` and `target` available.
    ///
    /// # Errors
    /// Returns the rendering error's message.
    pub fn render_string(&self, text: &str, inputs: &Arc<RenderInputs>) -> Result<String, String> {
        self.render_string_in(text, inputs, &inputs.project_name)
    }

    /// [`Renderer::render_string`] as `package` sees it: its scoped vars and macros (a
    /// package's property files render in their package).
    ///
    /// # Errors
    /// Returns the rendering error's message.
    pub fn render_string_in(
        &self,
        text: &str,
        inputs: &Arc<RenderInputs>,
        package: &str,
    ) -> Result<String, String> {
        if !text.contains("{{") && !text.contains("{%") {
            return Ok(text.to_string());
        }
        self.render_in(text, inputs, package)
            .map(|rendered| rendered.sql)
    }

    /// Renders a short template outside any node (a test argument such as `{{ ref('x') }}`),
    /// recording the references it makes.
    ///
    /// # Errors
    /// Returns the rendering error's message.
    pub fn render_expression(
        &self,
        text: &str,
        inputs: &Arc<RenderInputs>,
    ) -> Result<Rendered, String> {
        self.render_in(text, inputs, &inputs.project_name)
    }

    fn render_in(
        &self,
        text: &str,
        inputs: &Arc<RenderInputs>,
        package: &str,
    ) -> Result<Rendered, String> {
        let scope = RenderScope::new(inputs, "", package, false);
        let template = format!("{{{{ __strata_enter(__strata_scope) }}}}{text}");
        let sql = self
            .env
            .render_str(
                &template,
                minijinja::context! {
                    __strata_scope => Value::from_dyn_object(scope.clone()),
                    target => target(inputs),
                },
            )
            .map_err(|err| err.detail().unwrap_or("invalid template").to_string())?;
        let captured = scope.captured();
        Ok(Rendered { sql, captured })
    }

    /// Whether the root project defines macro `name` itself (dbt's overridable macros such
    /// as `generate_schema_name`).
    pub fn root_defines(&self, name: &str) -> bool {
        self.catalog.defines(&self.catalog.root, name)
    }

    /// Calls the root project's `name(custom, node)` as dbt calls its naming macros
    /// (`generate_schema_name(custom_schema_name, node)`), and returns what it renders,
    /// trimmed.
    ///
    /// # Errors
    /// Returns the rendering error's message.
    pub fn render_naming_macro(
        &self,
        name: &str,
        custom: Option<&str>,
        node: &serde_json::Value,
        inputs: &Arc<RenderInputs>,
    ) -> Result<String, String> {
        let scope = RenderScope::new(inputs, "", &inputs.project_name, false);
        let template = format!("{}{{{{ {name}(__custom, __node) }}}}", self.prelude);
        let context = minijinja::context! {
            __strata_scope => Value::from_dyn_object(scope),
            __custom => custom,
            __node => Value::from(Serde(node.clone())),
            target => target(inputs),
        };
        self.env
            .render_str(&template, context)
            .map(|rendered| rendered.trim().to_string())
            .map_err(|err| err.detail().map_or_else(|| err.to_string(), str::to_string))
    }

    /// Returns true when the generic test `name` is defined with `{% test name %}`: when
    /// unqualified, in `package` (whose property file declares the test), the root project or
    /// dbt; in the named package when `namespace.name`.
    pub fn has_generic_test(&self, name: &str, package: &str) -> bool {
        match name.split_once('.') {
            Some((namespace, test)) => self.catalog.defines(namespace, &format!("test_{test}")),
            None => self
                .catalog
                .unqualified(package, &format!("test_{name}"))
                .is_some(),
        }
    }

    /// Renders a project-defined generic test for one model (and column), declared in a
    /// property file of `package`. String arguments that start with `ref(` or `source(` are
    /// evaluated, as dbt does for `to: ref('x')`.
    ///
    /// # Errors
    /// Returns the rendering error's message.
    pub fn render_generic_test(
        &self,
        name: &str,
        package: &str,
        relation: &Relation,
        column: Option<&str>,
        arguments: &serde_json::Map<String, serde_json::Value>,
        inputs: &Arc<RenderInputs>,
    ) -> Result<Rendered, String> {
        let mut call = match name.split_once('.') {
            Some((package, test)) => format!("{package}.test_{test}(model=__model"),
            None => format!("test_{name}(model=__model"),
        };
        if column.is_some() {
            call.push_str(", column_name=__column");
        }
        let mut values = BTreeMap::new();
        for (key, value) in arguments {
            if !is_identifier(key) || key == "model" || (key == "column_name" && column.is_some()) {
                continue;
            }
            match value.as_str() {
                Some(text) if text.starts_with("ref(") || text.starts_with("source(") => {
                    call.push_str(&format!(", {key}={text}"));
                }
                _ => {
                    call.push_str(&format!(", {key}=__args.{key}"));
                    values.insert(key.clone(), value.clone());
                }
            }
        }
        call.push(')');
        let scope = RenderScope::new(inputs, "", package, false);
        let template = format!("{}{{{{ {call} }}}}", self.prelude);
        let context = minijinja::context! {
            __strata_scope => Value::from_dyn_object(scope.clone()),
            __model => Value::from_object(relation.clone()),
            __column => column,
            __args => Value::from(Serde(values)),
        };
        let sql = self
            .env
            .render_str(&template, context)
            .map_err(|err| match err.detail() {
                Some(detail) => detail.to_string(),
                None => err.kind().to_string(),
            })?;
        let captured = scope.captured();
        Ok(Rendered { sql, captured })
    }

    fn diagnostic(&self, err: &Error, node_source: &SourceText, node: &str) -> ProjectDiagnostic {
        if let Some(template) = err.name()
            && let Some(range) = err.range()
            && let Some(file) = self.macro_files.iter().find(|file| {
                file.template == template && range.start >= file.start && range.start <= file.end
            })
        {
            return jinja_diagnostic_at(
                err,
                &file.source,
                file.original_offset(range.start - file.start),
                file.original_offset(range.end.max(range.start) - file.start),
            );
        }
        let edits = self
            .node_edits
            .get(&template_name(node_source, node))
            .cloned()
            .unwrap_or_default();
        let prelude = self.prelude.len();
        jinja_diagnostic(err, node_source, |offset| {
            original_offset(std::slice::from_ref(&edits), offset.saturating_sub(prelude))
        })
    }
}

/// The template of a node: its file and its name (a file of snapshots holds several nodes).
/// `target`: the warehouse as dbt's profile target would describe it.
fn target(inputs: &RenderInputs) -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("name", inputs.target_name.clone()),
        ("schema", inputs.target_schema.clone()),
        ("type", String::from("strata")),
        ("database", String::from("strata")),
        ("dbname", String::from("strata")),
        ("profile_name", String::from("strata")),
    ])
}

fn template_name(source: &SourceText, node: &str) -> String {
    format!("{}::{node}", source.path.to_string_lossy())
}

/// Converts a minijinja error into a diagnostic on `source`, mapping template offsets to the
/// file's with `to_file`.
fn jinja_diagnostic(
    err: &Error,
    source: &SourceText,
    to_file: impl Fn(usize) -> usize,
) -> ProjectDiagnostic {
    match (err.range(), err.line()) {
        (Some(range), _) => {
            jinja_diagnostic_at(err, source, to_file(range.start), to_file(range.end))
        }
        (None, Some(line)) => {
            base_diagnostic(err).at(source, u32::try_from(line).unwrap_or(u32::MAX), 1)
        }
        (None, None) => base_diagnostic(err).in_file(&source.path),
    }
}

fn jinja_diagnostic_at(
    err: &Error,
    source: &SourceText,
    start: usize,
    end: usize,
) -> ProjectDiagnostic {
    let called = source
        .text
        .get(start..end)
        .and_then(|text| text.split('(').next())
        .map(str::trim)
        .filter(|name| !name.is_empty());
    match called {
        // minijinja does not name what it could not call; the source at the error does.
        Some(name) if err.detail() == Some("value of type undefined is not callable") => {
            ProjectDiagnostic::error(
                "strata::jinja_unknown_function",
                format!("unknown function or macro '{name}'"),
            )
            .with_hint("define it as a macro under macros/, install the package that has it under dbt_packages/, or check the spelling")
            .at_range(source, start, end)
        }
        _ => base_diagnostic(err).at_range(source, start, end),
    }
}

/// `(name, method)` of minijinja's "undefined has no method named m (`name` is undefined)".
fn undefined_namespace(detail: &str) -> Option<(&str, &str)> {
    let rest = detail.strip_prefix("undefined has no method named ")?;
    let (method, rest) = rest.split_once(" (`")?;
    let name = rest.strip_suffix("` is undefined)")?;
    Some((name, method))
}

fn base_diagnostic(err: &Error) -> ProjectDiagnostic {
    let detail = err.detail().unwrap_or_default().to_string();
    let (code, message, hint) = match err.kind() {
        ErrorKind::SyntaxError => (
            "strata::jinja_syntax",
            format!("jinja syntax error: {detail}"),
            Some("check that every {{, {% and {# is closed and every block has its end tag"),
        ),
        ErrorKind::UnknownFunction => (
            "strata::jinja_unknown_function",
            format!(
                "unknown function '{}'",
                detail.trim_end_matches(" is unknown")
            ),
            Some("define it as a macro under macros/, or check the spelling"),
        ),
        ErrorKind::UnknownMethod if let Some((name, method)) = undefined_namespace(&detail) => (
            "strata::jinja",
            format!(
                "'{name}' is undefined: no variable, macro or installed package has that name, so {name}.{method}(…) cannot be called"
            ),
            Some(
                "if it is a package, declare it in packages.yml (or dependencies.yml) and run `strata deps`",
            ),
        ),
        ErrorKind::UnknownTest | ErrorKind::UnknownFilter | ErrorKind::UnknownMethod => {
            ("strata::jinja", detail.clone(), None)
        }
        ErrorKind::OutOfFuel => (
            "strata::jinja_fuel",
            String::from("template rendering ran too long"),
            Some("look for a loop over a very large range"),
        ),
        _ if detail.starts_with("unknown model")
            || detail.starts_with("unknown source")
            || detail.starts_with("source '") =>
        {
            ("strata::unknown_ref", detail.clone(), None)
        }
        _ if detail.starts_with("config(): ") => ("strata::config", detail.clone(), None),
        _ if detail.is_empty() => ("strata::jinja", err.kind().to_string(), None),
        _ => ("strata::jinja", detail.clone(), None),
    };
    let diagnostic = ProjectDiagnostic::error(code, message);
    match hint {
        Some(hint) => diagnostic.with_hint(hint),
        None => diagnostic,
    }
}

/// Returns the first position at or after `at` that is not ASCII whitespace.
fn skip_whitespace(bytes: &[u8], mut at: usize) -> usize {
    while bytes.get(at).is_some_and(u8::is_ascii_whitespace) {
        at += 1;
    }
    at
}

/// Returns the end of the identifier (letters, digits, `_`) starting at `at`.
fn identifier_end(text: &str, at: usize) -> usize {
    at + text[at..]
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
        .count()
}

/// Finds `{% macro name(` definitions in a macro file, with the byte offset of each name.
pub fn macro_names(text: &str) -> Vec<(String, usize)> {
    let mut names = Vec::new();
    let mut rest = 0usize;
    while let Some(found) = text[rest..].find("{%") {
        let mut at = rest + found + 2;
        let bytes = text.as_bytes();
        if bytes.get(at) == Some(&b'-') || bytes.get(at) == Some(&b'+') {
            at += 1;
        }
        at = skip_whitespace(bytes, at);
        if text[at..].starts_with("macro") && bytes.get(at + 5).is_some_and(u8::is_ascii_whitespace)
        {
            let start = skip_whitespace(bytes, at + 5);
            let end = identifier_end(text, start);
            if end > start {
                names.push((text[start..end].to_string(), start));
            }
        }
        rest = at;
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn macro_file(path: &str, text: &str) -> SqlFile {
        SqlFile {
            name: String::from("m"),
            folders: Vec::new(),
            source: SourceText::new(path, text),
        }
    }

    fn inputs() -> Arc<RenderInputs> {
        Arc::new(RenderInputs {
            project_name: String::from("shop"),
            project_vars: serde_json::json!({"days": 3, "events": "{{ source('raw', 'events') }}"})
                .as_object()
                .unwrap()
                .clone(),
            cli_vars: serde_json::json!({"region": "eu"})
                .as_object()
                .unwrap()
                .clone(),
            env: BTreeMap::from([(String::from("HOME_DIR"), String::from("/h"))]),
            target_name: String::from("dev"),
            target_schema: String::from("main"),
            relations: BTreeMap::from([
                (String::from("orders"), Relation::new("silver", "orders")),
                (
                    String::from("Customers"),
                    Relation::new("gold", "Customers"),
                ),
            ]),
            sources: BTreeMap::from([(
                (String::from("raw"), String::from("events")),
                Relation::new("raw", "events"),
            )]),
            ..RenderInputs::default()
        })
    }

    fn render(macros: &[SqlFile], text: &str) -> Result<Rendered, Box<ProjectDiagnostic>> {
        let mut errors = Vec::new();
        let packages = [MacroPackage {
            name: "shop",
            files: macros,
        }];
        let mut renderer = Renderer::new(&packages, BTreeMap::new(), None, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        let source = SourceText::new(PathBuf::from("models/m.sql"), text);
        renderer.add(&source, "m")?;
        renderer.render(
            &source,
            "m",
            &inputs(),
            false,
            Some(&Relation::new("gold", "m")),
        )
    }

    #[test]
    fn a_missing_package_says_how_to_install_it() {
        let error = render(&[], "{{ dbt_utils.star(ref('orders')) }}").unwrap_err();
        assert!(
            error.message.contains("'dbt_utils' is undefined"),
            "{}",
            error.message
        );
        assert!(
            error
                .hint
                .as_deref()
                .unwrap_or_default()
                .contains("strata deps")
        );
    }

    #[test]
    fn a_var_holding_jinja_renders_where_it_is_used() {
        let rendered = render(
            &[],
            "select * from {{ var('events') }} where {{ target.type == 'strata' }}",
        )
        .unwrap();
        assert_eq!(rendered.sql, "select * from raw.events where True");
        assert_eq!(
            rendered.captured.dependencies,
            vec![Dependency::Source(
                String::from("raw"),
                String::from("events")
            )]
        );
    }

    #[test]
    fn dbt_functions_render_and_are_recorded() {
        let rendered = render(
            &[],
            "{{ config(materialized='table', tags=['a']) }}select * from {{ ref('orders') }} join {{ source('raw', 'events') }} \
             where d > {{ var('days') }} and r = '{{ var('region') }}' and x = {{ var('missing', 7) }} -- {{ env_var('HOME_DIR') }} {{ this }} {{ is_incremental() }} {{ ref('Customers') }}",
        )
        .unwrap();
        assert_eq!(
            rendered.sql,
            "select * from silver.orders join raw.events where d > 3 and r = 'eu' and x = 7 -- /h gold.m False gold.\"Customers\""
        );
        assert_eq!(
            rendered.captured.dependencies,
            vec![
                Dependency::Ref(String::from("orders")),
                Dependency::Source(String::from("raw"), String::from("events")),
                Dependency::Ref(String::from("Customers")),
            ]
        );
        assert_eq!(
            rendered.captured.config.materialized,
            Some(crate::config::Materialization::Table)
        );
    }

    #[test]
    fn macros_call_each_other_and_see_the_node() {
        let macros = [
            macro_file(
                "macros/a.sql",
                "{% macro cents(col) %}({{ col }} / 100.0){% endmacro %}",
            ),
            macro_file(
                "macros/b.sql",
                "{% macro orders_total() %}sum({{ cents('amount') }}) from {{ ref('orders') }}{% endmacro %}",
            ),
        ];
        let rendered = render(&macros, "select {{ orders_total() }}").unwrap();
        assert_eq!(
            rendered.sql,
            "select sum((amount / 100.0)) from silver.orders"
        );
        assert_eq!(
            rendered.captured.dependencies,
            vec![Dependency::Ref(String::from("orders"))]
        );
    }

    #[test]
    fn an_unknown_ref_suggests_the_closest_name() {
        let err = render(&[], "select 1\nfrom {{ ref('ordres') }}").unwrap_err();
        assert_eq!(
            err.message,
            "unknown model or seed 'ordres' (did you mean 'orders'?)"
        );
        assert_eq!((err.line, err.column), (Some(2), Some(9)));
    }

    #[test]
    fn errors_in_macros_point_into_the_macro_file() {
        let macros = [
            macro_file("macros/a.sql", "{% macro ok() %}1{% endmacro %}"),
            macro_file(
                "macros/b.sql",
                "\n{% macro bad() %}{{ ref('nope') }}{% endmacro %}",
            ),
        ];
        let err = render(&macros, "select {{ bad() }}").unwrap_err();
        assert_eq!(
            err.file.as_deref(),
            Some(std::path::Path::new("macros/b.sql"))
        );
        assert_eq!(err.line, Some(2));
    }

    #[test]
    fn errors_after_test_blocks_map_back_to_the_file() {
        let macros = [macro_file(
            "macros/t.sql",
            "{% test positive(model, column_name) %}select 1{% endtest %}\n{% macro bad() %}{{ ref('nope') }}{% endmacro %}",
        )];
        let err = render(&macros, "select {{ bad() }}").unwrap_err();
        assert_eq!(
            err.file.as_deref(),
            Some(std::path::Path::new("macros/t.sql"))
        );
        assert_eq!((err.line, err.column), (Some(2), Some(21)));
    }

    #[test]
    fn test_blocks_become_macros() {
        let (text, edits) = rewrite_test_blocks("{%- test a(model) -%}x{%- endtest %}");
        assert_eq!(text, "{%- macro test_a(model) -%}x{%- endmacro %}");
        assert_eq!(edits.len(), 2);
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let err = render(&[], "select 1\n{% if x %}\n").unwrap_err();
        assert_eq!(err.code, "strata::jinja_syntax");
        assert!(
            err.message.contains("unexpected end of input"),
            "{}",
            err.message
        );
    }

    #[test]
    fn missing_vars_explain_how_to_set_them() {
        let err = render(&[], "{{ var('nope') }}").unwrap_err();
        assert!(err.message.contains("--vars"), "{}", err.message);
    }

    #[test]
    fn config_get_sees_earlier_settings() {
        let rendered = render(&[], "{{ config(unique_key='id') }}{{ config.get('unique_key') | join(',') }} {{ config.get('nothing', 'd') }}").unwrap();
        assert_eq!(rendered.sql, "id d");
    }

    #[test]
    fn macro_names_are_found() {
        let names =
            macro_names("{%- macro a(x) %}{% endmacro %}\n{% macro  b_2() -%}{%- endmacro %}");
        let names: Vec<&str> = names.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, vec!["a", "b_2"]);
    }
}
