//! The compiled project: every node with its configuration, compiled SQL and dependencies.
//! Serialized as `target/manifest.json`; byte-identical for the same project and inputs.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::NodeConfig;
use crate::dag::Dag;
use crate::jinja::Relation;

/// The kind of a node.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum ResourceType {
    /// A SQL model.
    Model,
    /// A CSV seed.
    Seed,
    /// A data-quality test.
    Test,
    /// An external table declared in a property file.
    Source,
    /// The history of a relation's rows, kept as SCD type 2.
    Snapshot,
}

impl ResourceType {
    /// The name used in unique ids and `resource_type:` selectors.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Model => "model",
            Self::Seed => "seed",
            Self::Test => "test",
            Self::Source => "source",
            Self::Snapshot => "snapshot",
        }
    }

    /// Whether nodes of this kind are compiled from SQL into a relation of their own
    /// (models and snapshots).
    pub fn is_built_from_sql(self) -> bool {
        matches!(self, Self::Model | Self::Snapshot)
    }
}

/// A documented column.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// Description.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Declared type, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_type: Option<String>,
}

/// What a test checks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TestInfo {
    /// `not_null`, `unique`, `accepted_values`, `relationships`, or `singular` for a SQL file.
    pub test_name: String,
    /// Arguments of a generic test.
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub arguments: serde_json::Map<String, serde_json::Value>,
    /// The node the test is declared on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attached_node: Option<String>,
    /// The column the test is declared on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column_name: Option<String>,
}

/// Where a source table's data lives.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceInfo {
    /// Name of the source.
    pub source_name: String,
    /// Table name in storage.
    pub identifier: String,
    /// Location: a path relative to the project folder, an absolute path or an object-store URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// File format: `parquet`, `csv` or `json`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// How the ingest agent lands this table into bronze, when the table has an `ingest:`
    /// block.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingest: Option<IngestDeclaration>,
}

/// A source table's `ingest:` block as written (secrets are references, never values), and
/// where it is written, for the ingest agent's errors.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IngestDeclaration {
    /// The block: the source's keys with the table's over them.
    pub spec: serde_json::Map<String, serde_json::Value>,
    /// `file:line` of the table's declaration.
    pub origin: String,
}

/// One node of the project.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Node {
    /// `model.project.name`, `seed.project.name`, `test.project.name` or
    /// `source.project.source.table`.
    pub unique_id: String,
    /// Kind of node.
    pub resource_type: ResourceType,
    /// Name (for sources, the table name).
    pub name: String,
    /// Project the node belongs to.
    pub package_name: String,
    /// File the node comes from, relative to the project folder.
    pub original_file_path: String,
    /// For models: the folder under the model path (`bronze`, `silver`, `gold`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer: Option<String>,
    /// Fully qualified name: project, folders, name.
    pub fqn: Vec<String>,
    /// The relation the node is read from, for models, seeds and sources.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relation: Option<Relation>,
    /// The relation rendered as SQL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relation_name: Option<String>,
    /// Resolved configuration.
    pub config: NodeConfig,
    /// Description from property files.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Columns: declared ones, and for seeds the CSV header.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<Column>,
    /// Unique ids of the nodes this one reads.
    pub depends_on: Vec<String>,
    /// The SQL as written (for generic tests, empty).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub raw_code: String,
    /// The compiled SQL, with ephemeral models inlined, for models and tests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compiled_code: Option<String>,
    /// Where `strata compile` writes the compiled SQL, relative to the target folder.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compiled_path: Option<String>,
    /// A stable hash of the file's content.
    pub checksum: String,
    /// For tests: what they check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test: Option<TestInfo>,
    /// For sources: where the data is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceInfo>,
    /// For snapshots: how their history is kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<crate::snapshots::SnapshotSpec>,
    /// Why `compiled_code` is provisional: compiling asked the warehouse about a table not
    /// built yet, so a run compiles the node again once its parents are built.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deferred_compile: Option<String>,
    /// Files the node's rows are also written to: a model materialized `external`, and each
    /// post_hook that copies the model to a file (see [`crate::export`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exports: Vec<crate::export::ExportSpec>,
}

/// Facts about the compile, without timestamps so the file is reproducible.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metadata {
    /// The project's name.
    pub project_name: String,
    /// The project file that was read.
    pub project_file: String,
    /// Version of Strata that compiled it.
    pub strata_version: String,
    /// Target name (`target.name` in Jinja).
    pub target_name: String,
}

/// The compiled project.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Manifest {
    /// Facts about the compile.
    pub metadata: Metadata,
    /// Every node by unique id.
    pub nodes: BTreeMap<String, Node>,
    /// Macro names with the file defining them.
    pub macros: BTreeMap<String, String>,
    /// Parents of every node.
    pub parent_map: BTreeMap<String, Vec<String>>,
    /// Children of every node.
    pub child_map: BTreeMap<String, Vec<String>>,
}

impl Manifest {
    /// Builds the dependency graph of the manifest's nodes.
    pub fn dag(&self) -> Dag {
        let mut dag = Dag::default();
        for (id, node) in &self.nodes {
            dag.add_node(id);
            for parent in &node.depends_on {
                dag.add_edge(parent, id);
            }
        }
        dag
    }

    /// Serializes the manifest as pretty JSON ending with a newline.
    pub fn to_json(&self) -> String {
        let mut json = serde_json::to_string_pretty(self).unwrap_or_else(|err| {
            // Every field is a plain string, number or map; this cannot fail in practice.
            format!("{{\"error\": \"manifest serialization failed: {err}\"}}")
        });
        json.push('\n');
        json
    }

    /// Looks a node up by unique id or, for models, seeds and tests, by name.
    pub fn find(&self, name_or_id: &str) -> Option<&Node> {
        self.nodes.get(name_or_id).or_else(|| {
            self.nodes
                .values()
                .find(|node| node.resource_type != ResourceType::Source && node.name == name_or_id)
        })
    }
}

/// FNV-1a, 64 bit: a small stable hash for change detection (not for security).
pub fn checksum(text: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}
