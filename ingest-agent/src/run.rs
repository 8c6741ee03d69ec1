//! Landing the selected sources: which source tables, and the loop that reads each in
//! chunks and commits them. A source that fails does not stop the others.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_coordinator::Warehouse;
use strata_core::manifest::{Manifest, Node, ResourceType};
use tracing::Instrument;

use crate::IngestError;
use crate::connector::Connector;
use crate::database::DatabaseConnector;
use crate::landing::{BronzeTable, Landing};
use crate::spec::{ConnectorSpec, IngestSpec};

/// What to land.
#[derive(Debug, Clone)]
pub struct IngestRequest {
    /// The compiled project.
    pub manifest: Arc<Manifest>,
    /// Selected nodes: the sources among them, and the sources upstream of them, are landed.
    pub selected: BTreeSet<String>,
    /// Where the bronze tables are.
    pub warehouse: Warehouse,
    /// The project folder (relative file paths are under it).
    pub project_dir: PathBuf,
    /// Empty each bronze table and land its source from the start.
    pub full_refresh: bool,
}

/// One source table to land.
#[derive(Debug, Clone)]
pub struct IngestTarget {
    /// Its node's unique id.
    pub unique_id: String,
    /// `source.table`.
    pub name: String,
    /// Its bronze table.
    pub table_uri: String,
    /// Its ingest block.
    pub spec: IngestSpec,
}

/// What landing one source table did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableReport {
    /// Commits made (batches).
    pub batches: u32,
    /// Rows landed.
    pub rows: u64,
    /// Records quarantined.
    pub quarantined: u64,
    /// The table's version after the last commit.
    pub version: Option<i64>,
    /// How long it took.
    pub elapsed: Duration,
}

/// The outcome of one source table.
#[derive(Debug)]
pub struct TableOutcome {
    /// The source table (`source.table`).
    pub name: String,
    /// Its bronze table.
    pub table_uri: String,
    /// What was landed, or why it failed.
    pub result: Result<TableReport, IngestError>,
}

/// The source tables with an `ingest:` block that `request` selects: those selected, and
/// those upstream of a selected node, in name order.
///
/// # Errors
/// Every ingest block that is wrong, each naming its file and line.
pub fn targets(request: &IngestRequest) -> Result<Vec<IngestTarget>, Vec<IngestError>> {
    let wanted = with_ancestors(&request.manifest, &request.selected);
    let mut targets = Vec::new();
    let mut errors = Vec::new();
    for node in request.manifest.nodes.values() {
        let Some((declaration, relation)) = ingest_of(node) else {
            continue;
        };
        if !wanted.contains(&node.unique_id) {
            continue;
        }
        match IngestSpec::parse(declaration) {
            Ok(spec) => targets.push(IngestTarget {
                unique_id: node.unique_id.clone(),
                name: node.fqn[1..].join("."),
                table_uri: request.warehouse.table_uri(relation),
                spec,
            }),
            Err(err) => errors.push(err),
        }
    }
    if errors.is_empty() {
        Ok(targets)
    } else {
        Err(errors)
    }
}

fn ingest_of(
    node: &Node,
) -> Option<(
    &strata_core::manifest::IngestDeclaration,
    &strata_core::jinja::Relation,
)> {
    if node.resource_type != ResourceType::Source {
        return None;
    }
    Some((
        node.source.as_ref()?.ingest.as_ref()?,
        node.relation.as_ref()?,
    ))
}

/// `selected` and every node upstream of one of them.
fn with_ancestors(manifest: &Manifest, selected: &BTreeSet<String>) -> BTreeSet<String> {
    let mut seen = selected.clone();
    let mut stack: Vec<&String> = selected.iter().collect();
    while let Some(id) = stack.pop() {
        for parent in manifest.parent_map.get(id).into_iter().flatten() {
            if seen.insert(parent.clone()) {
                stack.push(parent);
            }
        }
    }
    seen
}

/// Lands every target, one after the other, calling `on_outcome` as each finishes.
pub async fn ingest(
    request: &IngestRequest,
    targets: &[IngestTarget],
    mut on_outcome: impl FnMut(&TableOutcome),
) -> Vec<TableOutcome> {
    let mut outcomes = Vec::with_capacity(targets.len());
    for target in targets {
        let span = tracing::info_span!(
            "ingest",
            otel.name = %format!("ingest {}", target.name),
            source = %target.name,
            connector = target.spec.connector.name(),
            rows_out = tracing::field::Empty,
            batches = tracing::field::Empty,
        );
        let result = land(request, target).instrument(span.clone()).await;
        if let Ok(report) = &result {
            span.record("rows_out", report.rows);
            span.record("batches", report.batches);
        }
        let outcome = TableOutcome {
            name: target.name.clone(),
            table_uri: target.table_uri.clone(),
            result,
        };
        on_outcome(&outcome);
        outcomes.push(outcome);
    }
    outcomes
}

/// Lands one source table: chunk after chunk until the source has nothing new.
async fn land(request: &IngestRequest, target: &IngestTarget) -> Result<TableReport, IngestError> {
    let started = Instant::now();
    let policies = &target.spec.policies;
    let landing = Landing {
        source_name: target.name.clone(),
        drift: policies.schema_drift,
        bad_records: policies.on_bad_record,
        columns: policies.metadata_columns.clone(),
        source_system: policies
            .source_system
            .clone()
            .unwrap_or_else(|| format!("{}:{}", target.spec.connector.name(), target.name)),
    };
    let mut table = BronzeTable::open(&target.table_uri, &target.name, landing).await?;
    if request.full_refresh {
        table.reset().await?;
    }
    let mut connector = connector_for(request, target)?;
    let mut report = TableReport::default();
    loop {
        let chunk = table.begin_chunk();
        let Some(read) = connector.read_chunk(table.state(), chunk).await? else {
            break;
        };
        let committed = table.commit(read.parts, read.position).await?;
        tracing::info!(source = %target.name, batch = committed.batch, rows = committed.rows, quarantined = committed.quarantined, version = committed.version, "batch landed");
        report.batches += 1;
        report.rows += committed.rows;
        report.quarantined += committed.quarantined;
        report.version = Some(committed.version);
        if read.last {
            break;
        }
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

fn connector_for(
    request: &IngestRequest,
    target: &IngestTarget,
) -> Result<Box<dyn Connector>, IngestError> {
    let retries = target.spec.policies.retries;
    Ok(match &target.spec.connector {
        ConnectorSpec::Postgres(spec) => Box::new(DatabaseConnector::new(
            spec.clone(),
            crate::postgres::Postgres::new(spec.connection.clone(), retries, &target.name),
            &target.name,
        )),
        ConnectorSpec::Mysql(spec) => Box::new(DatabaseConnector::new(
            spec.clone(),
            crate::mysql::Mysql::new(spec.connection.clone(), retries, &target.name),
            &target.name,
        )),
        ConnectorSpec::Http(spec) => Box::new(crate::http::HttpConnector::new(
            spec.clone(),
            retries,
            &target.name,
        )?),
        ConnectorSpec::Files(spec) => Box::new(crate::files::FilesConnector::new(
            spec.clone(),
            &request.project_dir,
            &target.name,
        )),
    })
}
