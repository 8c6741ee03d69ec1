//! Property files (`*.yml`, version 2): sources, models, seeds, their columns and their tests.

use crate::config::{ConfigLayer, read_config_mapping};
use crate::diagnostics::{ProjectDiagnostic, SourceText};
use crate::project::{Project, PropertyFile};
use crate::yaml::{Yaml, YamlKey, YamlValue};

/// A position in a property file.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The file.
    pub source: SourceText,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
}

impl Origin {
    fn of(source: &SourceText, yaml: &Yaml) -> Origin {
        Origin {
            source: source.clone(),
            line: yaml.line,
            column: yaml.column,
        }
    }

    /// Creates an error diagnostic at this position.
    pub fn error(&self, code: &'static str, message: impl Into<String>) -> ProjectDiagnostic {
        ProjectDiagnostic::error(code, message).at(&self.source, self.line, self.column)
    }
}

/// A test declared in a property file.
#[derive(Debug, Clone)]
pub struct TestDeclaration {
    /// The generic test: `not_null`, `unique`, `accepted_values`, `relationships`, or a
    /// `{% test %}` defined in the project.
    pub test_name: String,
    /// A name given with `name:`.
    pub custom_name: Option<String>,
    /// The test's arguments (`values`, `to`, `field`, `quote`, …).
    pub arguments: serde_json::Map<String, serde_json::Value>,
    /// The column it is declared on, for column tests.
    pub column: Option<String>,
    /// Its `config:` (severity, where, store_failures, warn_if, error_if).
    pub config: ConfigLayer,
    /// Where it is declared.
    pub origin: Origin,
}

/// A column declared in a property file.
#[derive(Debug, Clone)]
pub struct ColumnDeclaration {
    /// Column name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Declared type, when given.
    pub data_type: Option<String>,
    /// Where it is declared.
    pub origin: Origin,
}

/// Properties of a model or a seed.
#[derive(Debug, Clone)]
pub struct NodeProperties {
    /// Name of the model or seed.
    pub name: String,
    /// Description.
    pub description: String,
    /// `config:`.
    pub config: ConfigLayer,
    /// Declared columns, in order.
    pub columns: Vec<ColumnDeclaration>,
    /// Model-level and column-level tests.
    pub tests: Vec<TestDeclaration>,
    /// `versions:` of a versioned model, in the order written.
    pub versions: Vec<ModelVersion>,
    /// `latest_version:`, when set (otherwise the greatest version is the latest).
    pub latest_version: Option<String>,
    /// Where it is declared.
    pub origin: Origin,
}

/// One entry of a model's `versions:`.
#[derive(Debug, Clone)]
pub struct ModelVersion {
    /// `v:`, as text (`1`, `2`, `2.1`).
    pub version: String,
    /// `defined_in:`: the stem of the file holding this version (default `<model>_v<v>`).
    pub defined_in: Option<String>,
    /// `config:` of this version, over the model's.
    pub config: ConfigLayer,
    /// Columns of the model this version leaves out (`- include: all` with `exclude:`).
    pub excluded_columns: Vec<String>,
    /// Tests of this version, beside the model's.
    pub tests: Vec<TestDeclaration>,
    /// Columns declared for this version.
    pub columns: Vec<ColumnDeclaration>,
    /// Where it is declared.
    pub origin: Origin,
}

impl ModelVersion {
    /// The name of the node of version `self` of model `model`: `<model>_v<v>`, as dbt
    /// names it in test names and as the default alias.
    pub fn node_name(&self, model: &str) -> String {
        format!("{model}_v{}", self.version)
    }

    /// The stem of the SQL file of version `self` of model `model`.
    pub fn file_stem(&self, model: &str) -> String {
        self.defined_in
            .clone()
            .unwrap_or_else(|| format!("{model}_v{}", self.version))
    }
}

/// A table of a source.
#[derive(Debug, Clone)]
pub struct SourceTable {
    /// Name used in `source('source', 'name')`.
    pub name: String,
    /// Name of the table in storage (`identifier:`), defaults to `name`.
    pub identifier: String,
    /// Description.
    pub description: String,
    /// External location, before placeholders are filled.
    pub location: Option<String>,
    /// File format stated in the file.
    pub format: Option<String>,
    /// Declared columns.
    pub columns: Vec<ColumnDeclaration>,
    /// Tests on the table and its columns.
    pub tests: Vec<TestDeclaration>,
    /// The `ingest:` block that lands this table into bronze (the source's block with the
    /// table's over it), as written; the ingest agent reads it.
    pub ingest: Option<serde_json::Map<String, serde_json::Value>>,
    /// Where it is declared.
    pub origin: Origin,
}

/// A source: a group of external tables.
#[derive(Debug, Clone)]
pub struct SourceDeclaration {
    /// Name used in `source('name', 'table')`.
    pub name: String,
    /// Schema the tables are registered under; defaults to the source's name.
    pub schema: String,
    /// Description.
    pub description: String,
    /// Location pattern for every table (`{name}` is the table's identifier).
    pub location: Option<String>,
    /// File format for every table.
    pub format: Option<String>,
    /// The tables.
    pub tables: Vec<SourceTable>,
    /// Where it is declared.
    pub origin: Origin,
    /// The package (the root project or an installed package) whose property file declares it.
    pub package: String,
}

/// Everything read from the project's property files.
#[derive(Debug, Default, Clone)]
pub struct Properties {
    /// Sources.
    pub sources: Vec<SourceDeclaration>,
    /// Model properties.
    pub models: Vec<NodeProperties>,
    /// Seed properties.
    pub seeds: Vec<NodeProperties>,
    /// Snapshot properties (a `relation:` entry also declares the snapshot itself; the
    /// project loader makes its SQL).
    pub snapshots: Vec<NodeProperties>,
}

impl Properties {
    /// Reads every property file, collecting problems.
    pub fn read(files: &[PropertyFile], errors: &mut Vec<ProjectDiagnostic>) -> Properties {
        let mut properties = Properties::default();
        for file in files {
            read_file(file, &mut properties, errors);
        }
        properties
    }

    /// Reads the property files of the root project and of each installed package; each
    /// source knows the package that declares it.
    pub fn of_project(project: &Project, errors: &mut Vec<ProjectDiagnostic>) -> Properties {
        let mut all = Properties::default();
        for member in std::iter::once(project).chain(&project.packages) {
            let mut properties = Properties::read(&member.property_files, errors);
            for source in &mut properties.sources {
                source.package = member.name.clone();
            }
            all.sources.append(&mut properties.sources);
            all.models.append(&mut properties.models);
            all.seeds.append(&mut properties.seeds);
            all.snapshots.append(&mut properties.snapshots);
        }
        all
    }
}

fn read_file(
    file: &PropertyFile,
    properties: &mut Properties,
    errors: &mut Vec<ProjectDiagnostic>,
) {
    let source = &file.source;
    let document = &file.document;
    if document.is_null() {
        return;
    }
    let Some(entries) = document.entries() else {
        errors.push(
            ProjectDiagnostic::error(
                "strata::properties",
                format!(
                    "a property file must be a mapping, found {}",
                    document.kind()
                ),
            )
            .at(source, document.line, document.column)
            .with_hint("start with 'version: 2' and a 'models:' or 'sources:' list"),
        );
        return;
    };
    for (key, value) in entries {
        match key.name.as_str() {
            "sources" => {
                for item in list(value, source, "sources", errors) {
                    if let Some(declaration) = read_source(item, source, errors) {
                        properties.sources.push(declaration);
                    }
                }
            }
            "models" => {
                for item in list(value, source, "models", errors) {
                    if let Some(node) = read_node(item, source, errors) {
                        properties.models.push(node);
                    }
                }
            }
            "seeds" => {
                for item in list(value, source, "seeds", errors) {
                    if let Some(node) = read_node(item, source, errors) {
                        properties.seeds.push(node);
                    }
                }
            }
            "snapshots" => {
                for item in list(value, source, "snapshots", errors) {
                    if let Some(node) = read_node(item, source, errors) {
                        properties.snapshots.push(node);
                    }
                }
            }
            // Accepted and not used by Strata (yet): documentation and other resource kinds.
            "version" | "analyses" | "macros" | "exposures" | "metrics" | "semantic_models"
            | "saved_queries" | "groups" | "unit_tests" | "data_tests" => {}
            other => errors.push(
                ProjectDiagnostic::warning(
                    "strata::properties",
                    format!("unknown top-level key '{other}' is ignored"),
                )
                .at(source, key.line, key.column),
            ),
        }
    }
}

fn list<'a>(
    value: &'a Yaml,
    source: &SourceText,
    what: &str,
    errors: &mut Vec<ProjectDiagnostic>,
) -> &'a [Yaml] {
    match &value.value {
        YamlValue::Seq(items) => items,
        YamlValue::Null => &[],
        _ => {
            errors.push(
                ProjectDiagnostic::error(
                    "strata::properties",
                    format!("'{what}' must be a list, found {}", value.kind()),
                )
                .at(source, value.line, value.column)
                .with_hint(format!("write each entry as '- name: …' under '{what}:'")),
            );
            &[]
        }
    }
}

fn required_name(
    item: &Yaml,
    source: &SourceText,
    what: &str,
    errors: &mut Vec<ProjectDiagnostic>,
) -> Option<String> {
    match item.get("name").and_then(Yaml::scalar_string) {
        Some(name) if !name.trim().is_empty() => Some(name),
        _ => {
            errors.push(
                ProjectDiagnostic::error(
                    "strata::properties",
                    format!("this {what} has no 'name'"),
                )
                .at(source, item.line, item.column)
                .with_hint("add 'name: …'"),
            );
            None
        }
    }
}

fn text(item: &Yaml, key: &str) -> String {
    item.get(key)
        .and_then(Yaml::scalar_string)
        .unwrap_or_default()
}

fn read_config(
    item: &Yaml,
    source: &SourceText,
    errors: &mut Vec<ProjectDiagnostic>,
) -> ConfigLayer {
    let mut layer = ConfigLayer::default();
    if let Some(config) = item.get("config") {
        let rest = read_config_mapping(config, source, true, &mut layer, errors);
        for (key, value) in rest {
            if let Err(message) = layer.set(key, &value.to_json()) {
                errors.push(ProjectDiagnostic::error("strata::config", message).at(
                    source,
                    value.line,
                    value.column,
                ));
            }
        }
    }
    // Older property files put some settings next to `name:`.
    for key in ["tags", "meta"] {
        if let Some(value) = item.get(key)
            && let Err(message) = layer.set(key, &value.to_json())
        {
            errors.push(ProjectDiagnostic::error("strata::config", message).at(
                source,
                value.line,
                value.column,
            ));
        }
    }
    layer
}

fn read_node(
    item: &Yaml,
    source: &SourceText,
    errors: &mut Vec<ProjectDiagnostic>,
) -> Option<NodeProperties> {
    let name = required_name(item, source, "entry", errors)?;
    let mut node = NodeProperties {
        name,
        description: text(item, "description"),
        config: read_config(item, source, errors),
        columns: Vec::new(),
        tests: Vec::new(),
        versions: Vec::new(),
        latest_version: item.get("latest_version").and_then(Yaml::scalar_string),
        origin: Origin::of(source, item),
    };
    read_columns_and_tests(item, source, &mut node.columns, &mut node.tests, errors);
    if let Some(versions) = item.get("versions") {
        for entry in list(versions, source, "versions", errors) {
            if let Some(version) = read_version(entry, source, errors) {
                node.versions.push(version);
            }
        }
    }
    Some(node)
}

/// Reads one entry of `versions:`; its `columns:` may mix declared columns with
/// `include: all` / `exclude: […]` entries.
fn read_version(
    item: &Yaml,
    source: &SourceText,
    errors: &mut Vec<ProjectDiagnostic>,
) -> Option<ModelVersion> {
    let Some(version) = item.get("v").and_then(Yaml::scalar_string) else {
        errors.push(
            ProjectDiagnostic::error("strata::properties", "a model version needs 'v:'")
                .at(source, item.line, item.column)
                .with_hint("write '- v: 1' for the first version"),
        );
        return None;
    };
    let mut excluded_columns = Vec::new();
    let mut declared = Vec::new();
    if let Some(YamlValue::Seq(columns)) = item.get("columns").map(|columns| &columns.value) {
        for column in columns {
            if column.get("name").is_some() {
                declared.push(column.clone());
            } else if let Some(exclude) = column.get("exclude") {
                excluded_columns.extend(match exclude.to_json() {
                    serde_json::Value::Array(names) => names
                        .iter()
                        .filter_map(|name| name.as_str().map(str::to_string))
                        .collect(),
                    serde_json::Value::String(name) => vec![name],
                    _ => Vec::new(),
                });
            }
        }
    }
    // The version's own tests and named columns, read as a node's are.
    let mut entries: Vec<(YamlKey, Yaml)> = item
        .entries()
        .unwrap_or_default()
        .iter()
        .filter(|(key, _)| key.name != "columns")
        .cloned()
        .collect();
    if let Some((key, _)) = item
        .entries()
        .and_then(|e| e.iter().find(|(k, _)| k.name == "columns"))
    {
        entries.push((
            key.clone(),
            Yaml {
                value: YamlValue::Seq(declared),
                line: key.line,
                column: key.column,
            },
        ));
    }
    let readable = Yaml {
        value: YamlValue::Map(entries),
        line: item.line,
        column: item.column,
    };
    let mut tests = Vec::new();
    let mut columns = Vec::new();
    read_columns_and_tests(&readable, source, &mut columns, &mut tests, errors);
    Some(ModelVersion {
        version,
        defined_in: item.get("defined_in").and_then(Yaml::scalar_string),
        config: read_config(item, source, errors),
        excluded_columns,
        tests,
        columns,
        origin: Origin::of(source, item),
    })
}

fn read_columns_and_tests(
    item: &Yaml,
    source: &SourceText,
    columns: &mut Vec<ColumnDeclaration>,
    tests: &mut Vec<TestDeclaration>,
    errors: &mut Vec<ProjectDiagnostic>,
) {
    for key in ["tests", "data_tests"] {
        if let Some(value) = item.get(key) {
            for test in list(value, source, key, errors) {
                if let Some(test) = read_test(test, None, source, errors) {
                    tests.push(test);
                }
            }
        }
    }
    let Some(declared) = item.get("columns") else {
        return;
    };
    for column in list(declared, source, "columns", errors) {
        let Some(name) = required_name(column, source, "column", errors) else {
            continue;
        };
        for key in ["tests", "data_tests"] {
            if let Some(value) = column.get(key) {
                for test in list(value, source, key, errors) {
                    if let Some(test) = read_test(test, Some(&name), source, errors) {
                        tests.push(test);
                    }
                }
            }
        }
        columns.push(ColumnDeclaration {
            description: text(column, "description"),
            data_type: column.get("data_type").and_then(Yaml::scalar_string),
            origin: Origin::of(source, column),
            name,
        });
    }
}

/// Keys of a test entry that configure it rather than being arguments (older dbt style).
const TEST_CONFIG_KEYS: [&str; 8] = [
    "severity",
    "where",
    "store_failures",
    "warn_if",
    "error_if",
    "tags",
    "enabled",
    "limit",
];

fn read_test(
    item: &Yaml,
    column: Option<&str>,
    source: &SourceText,
    errors: &mut Vec<ProjectDiagnostic>,
) -> Option<TestDeclaration> {
    let origin = Origin::of(source, item);
    let mut declaration = TestDeclaration {
        test_name: String::new(),
        custom_name: None,
        arguments: serde_json::Map::new(),
        column: column.map(str::to_string),
        config: ConfigLayer::default(),
        origin,
    };
    let body = match &item.value {
        YamlValue::String(name) => {
            declaration.test_name = name.clone();
            return Some(declaration);
        }
        YamlValue::Map(entries)
            if entries.len() == 1
                && !matches!(entries[0].0.name.as_str(), "test_name" | "name") =>
        {
            declaration.test_name = entries[0].0.name.clone();
            &entries[0].1
        }
        YamlValue::Map(_) if item.get("test_name").is_some() => {
            declaration.test_name = text(item, "test_name");
            item
        }
        _ => {
            errors.push(
                ProjectDiagnostic::error(
                    "strata::test_declaration",
                    format!(
                        "a test must be a name or a mapping with one test name, found {}",
                        item.kind()
                    ),
                )
                .at(source, item.line, item.column)
                .with_hint("write '- not_null' or '- accepted_values: {values: [a, b]}'"),
            );
            return None;
        }
    };
    let Some(entries) = body.entries() else {
        if !body.is_null() {
            errors.push(
                ProjectDiagnostic::error(
                    "strata::test_declaration",
                    format!(
                        "the arguments of test '{}' must be a mapping, found {}",
                        declaration.test_name,
                        body.kind()
                    ),
                )
                .at(source, body.line, body.column),
            );
            return None;
        }
        return Some(declaration);
    };
    for (key, value) in entries {
        match key.name.as_str() {
            "test_name" => {}
            "name" => declaration.custom_name = value.scalar_string(),
            "config" => {
                let rest =
                    read_config_mapping(value, source, true, &mut declaration.config, errors);
                for (key, value) in rest {
                    if let Err(message) = declaration.config.set(key, &value.to_json()) {
                        errors.push(ProjectDiagnostic::error("strata::config", message).at(
                            source,
                            value.line,
                            value.column,
                        ));
                    }
                }
            }
            "arguments" => match value.to_json() {
                serde_json::Value::Object(arguments) => declaration.arguments.extend(arguments),
                _ => errors.push(
                    ProjectDiagnostic::error(
                        "strata::test_declaration",
                        format!("'arguments' must be a mapping, found {}", value.kind()),
                    )
                    .at(source, value.line, value.column),
                ),
            },
            "column_name" => {
                declaration.column = value.scalar_string();
            }
            other if TEST_CONFIG_KEYS.contains(&other) => {
                if let Err(message) = declaration.config.set(other, &value.to_json()) {
                    errors.push(ProjectDiagnostic::error("strata::config", message).at(
                        source,
                        value.line,
                        value.column,
                    ));
                }
            }
            other => {
                declaration
                    .arguments
                    .insert(other.to_string(), value.to_json());
            }
        }
    }
    Some(declaration)
}

fn read_source(
    item: &Yaml,
    source: &SourceText,
    errors: &mut Vec<ProjectDiagnostic>,
) -> Option<SourceDeclaration> {
    let name = required_name(item, source, "source", errors)?;
    let (location, format) = external_location(item);
    let source_ingest = ingest_block(item, source, errors);
    let mut declaration = SourceDeclaration {
        schema: item
            .get("schema")
            .and_then(Yaml::scalar_string)
            .unwrap_or_else(|| name.clone()),
        name,
        description: text(item, "description"),
        location,
        format,
        tables: Vec::new(),
        origin: Origin::of(source, item),
        package: String::new(),
    };
    if let Some(tables) = item.get("tables") {
        for table in list(tables, source, "tables", errors) {
            let Some(table_name) = required_name(table, source, "source table", errors) else {
                continue;
            };
            let (location, format) = external_location(table);
            let mut parsed = SourceTable {
                identifier: table
                    .get("identifier")
                    .and_then(Yaml::scalar_string)
                    .unwrap_or_else(|| table_name.clone()),
                name: table_name,
                description: text(table, "description"),
                location,
                format,
                columns: Vec::new(),
                tests: Vec::new(),
                ingest: merged_ingest(source_ingest.as_ref(), ingest_block(table, source, errors)),
                origin: Origin::of(source, table),
            };
            read_columns_and_tests(
                table,
                source,
                &mut parsed.columns,
                &mut parsed.tests,
                errors,
            );
            declaration.tables.push(parsed);
        }
    }
    Some(declaration)
}

/// Reads an `ingest:` block: a mapping, or an error naming its line.
fn ingest_block(
    item: &Yaml,
    source: &SourceText,
    errors: &mut Vec<ProjectDiagnostic>,
) -> Option<serde_json::Map<String, serde_json::Value>> {
    let block = item.get("ingest")?;
    match block.to_json() {
        serde_json::Value::Object(map) => Some(map),
        serde_json::Value::Null => None,
        _ => {
            errors.push(
                ProjectDiagnostic::error("strata::ingest", "`ingest:` must be a mapping")
                    .at(source, block.line, block.column)
                    .with_hint("write `ingest: {connector: postgres, …}`; see docs/ingest.md"),
            );
            None
        }
    }
}

/// A table's ingest block: the source's keys with the table's over them. A table without a
/// block of its own takes the source's.
fn merged_ingest(
    source_block: Option<&serde_json::Map<String, serde_json::Value>>,
    table_block: Option<serde_json::Map<String, serde_json::Value>>,
) -> Option<serde_json::Map<String, serde_json::Value>> {
    match (source_block, table_block) {
        (None, table) => table,
        (Some(source), None) => Some(source.clone()),
        (Some(source), Some(table)) => {
            let mut merged = source.clone();
            merged.extend(table);
            Some(merged)
        }
    }
}

/// Reads an external location and format, from dbt-duckdb's `meta.external_location` or
/// `config.external_location`, or dbt-external-tables' `external.location`.
fn external_location(item: &Yaml) -> (Option<String>, Option<String>) {
    let location = item
        .get("external")
        .and_then(|external| external.get("location"))
        .or_else(|| {
            item.get("config")
                .and_then(|config| config.get("external_location"))
        })
        .or_else(|| {
            item.get("meta")
                .and_then(|meta| meta.get("external_location"))
        })
        .and_then(Yaml::scalar_string);
    let format = item
        .get("external")
        .and_then(|external| {
            external
                .get("file_format")
                .or_else(|| external.get("format"))
        })
        .or_else(|| item.get("config").and_then(|config| config.get("format")))
        .or_else(|| item.get("meta").and_then(|meta| meta.get("format")))
        .and_then(Yaml::scalar_string);
    (location, format)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> (Properties, Vec<ProjectDiagnostic>) {
        let source = SourceText::new("models/schema.yml", text);
        let document = Yaml::parse(&source).unwrap();
        let mut errors = Vec::new();
        let properties = Properties::read(&[PropertyFile { source, document }], &mut errors);
        (properties, errors)
    }

    #[test]
    fn tests_in_every_form() {
        let (properties, errors) = read(
            "version: 2
models:
  - name: orders
    columns:
      - name: id
        tests: [not_null, unique]
      - name: status
        data_tests:
          - accepted_values:
              values: [placed, shipped]
              severity: warn
          - accepted_values:
              arguments: {values: [a], quote: false}
              config: {where: \"x > 1\", error_if: \">10\"}
      - name: customer_id
        tests:
          - relationships: {to: ref('customers'), field: id, name: orders_have_customers}
",
        );
        assert!(errors.is_empty(), "{errors:?}");
        let tests = &properties.models[0].tests;
        assert_eq!(tests.len(), 5);
        assert_eq!(
            tests[2].config.severity,
            Some(crate::config::TestSeverity::Warn)
        );
        assert_eq!(
            tests[2].arguments["values"],
            serde_json::json!(["placed", "shipped"])
        );
        assert_eq!(tests[3].arguments["quote"], serde_json::json!(false));
        assert_eq!(tests[3].config.where_clause.as_deref(), Some("x > 1"));
        assert_eq!(tests[3].config.error_if.as_deref(), Some(">10"));
        assert_eq!(
            tests[4].custom_name.as_deref(),
            Some("orders_have_customers")
        );
        assert_eq!(tests[4].column.as_deref(), Some("customer_id"));
        assert_eq!(tests[4].origin.line, 17);
    }

    #[test]
    fn source_locations_in_every_dialect() {
        let (properties, errors) = read(
            "version: 2
sources:
  - name: raw
    meta: {external_location: \"data/{name}.parquet\"}
    tables:
      - name: events
      - name: users
        external: {location: data/users.csv, file_format: csv}
      - name: clicks
        config: {external_location: \"s3://b/clicks/\", format: json}
",
        );
        assert!(errors.is_empty(), "{errors:?}");
        let raw = &properties.sources[0];
        assert_eq!(raw.location.as_deref(), Some("data/{name}.parquet"));
        assert_eq!(raw.tables[1].location.as_deref(), Some("data/users.csv"));
        assert_eq!(raw.tables[1].format.as_deref(), Some("csv"));
        assert_eq!(raw.tables[2].format.as_deref(), Some("json"));
    }

    #[test]
    fn ingest_blocks_merge_the_tables_over_the_sources() {
        let (properties, errors) = read(
            "version: 2
sources:
  - name: crm
    ingest: {connector: postgres, connection: {env: CRM_URL}, parallelism: 2}
    tables:
      - name: customers
        ingest: {table: public.customers, parallelism: 4}
      - name: orders
  - name: plain
    tables:
      - name: t
  - name: wrong
    tables:
      - name: t
        ingest: [postgres]
",
        );
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].message.contains("must be a mapping"));
        assert_eq!(errors[0].line, Some(15));
        let crm = &properties.sources[0];
        let customers = crm.tables[0].ingest.as_ref().unwrap();
        assert_eq!(customers["connector"], "postgres");
        assert_eq!(customers["table"], "public.customers");
        assert_eq!(customers["parallelism"], 4);
        let orders = crm.tables[1].ingest.as_ref().unwrap();
        assert_eq!(orders["parallelism"], 2);
        assert!(properties.sources[1].tables[0].ingest.is_none());
    }

    #[test]
    fn shapes_that_are_wrong_are_reported_where_they_are() {
        let (_, errors) = read("models:\n  - description: x\n  - name: a\n    columns: 3\n");
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(errors[0].line, Some(2));
        assert!(
            errors[1].message.contains("'columns' must be a list"),
            "{}",
            errors[1].message
        );
    }
}
