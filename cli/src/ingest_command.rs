//! `strata ingest`, and the ingest phase `strata build` runs before its models: the selected
//! sources with an `ingest:` block (and those upstream of the selected models) are landed
//! into bronze, each line telling what landed or why a source failed.

use std::io::Write;

use strata_coordinator::RunRequest;
use strata_ingest_agent::{IngestRequest, TableOutcome, ingest, targets};

/// Lands the sources `request` selects (after emptying their bronze tables when
/// `full_refresh`). Returns whether every source landed.
///
/// # Errors
/// Only when standard output cannot be written.
pub(crate) async fn ingest_phase(
    request: &RunRequest,
    full_refresh: bool,
    out: &mut dyn Write,
) -> std::io::Result<bool> {
    let ingest_request = IngestRequest {
        manifest: request.manifest.clone(),
        selected: request.selected.clone(),
        warehouse: request.warehouse.clone(),
        project_dir: request.project_dir.clone(),
        full_refresh,
    };
    let targets = match targets(&ingest_request) {
        Ok(targets) => targets,
        Err(errors) => {
            for error in errors {
                writeln!(out, "error: {error}")?;
            }
            return Ok(false);
        }
    };
    if targets.is_empty() {
        return Ok(true);
    }
    let total = targets.len();
    writeln!(
        out,
        "Ingesting {total} source table{}",
        if total == 1 { "" } else { "s" }
    )?;
    let mut done = 0;
    let mut failed = 0;
    ingest(&ingest_request, &targets, |outcome| {
        done += 1;
        failed += usize::from(outcome.result.is_err());
        let _ = outcome_line(out, outcome, done, total);
    })
    .await;
    writeln!(out)?;
    Ok(failed == 0)
}

fn outcome_line(
    out: &mut dyn Write,
    outcome: &TableOutcome,
    done: usize,
    total: usize,
) -> std::io::Result<()> {
    let what = format!("source {}", outcome.name);
    match &outcome.result {
        Ok(report) => {
            let quarantined = if report.quarantined > 0 {
                format!(", {} quarantined", report.quarantined)
            } else {
                String::new()
            };
            writeln!(
                out,
                "{done:>4} of {total:<4} {what:.<70} [OK {} rows in {} batches{quarantined} in {:.2}s]",
                report.rows,
                report.batches,
                report.elapsed.as_secs_f64()
            )
        }
        Err(error) => {
            writeln!(out, "{done:>4} of {total:<4} {what:.<70} [ERROR]")?;
            writeln!(out, "  {error}")
        }
    }
}
