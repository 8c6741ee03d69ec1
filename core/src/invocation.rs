//! What one invocation compiles: a project folder with `--vars`, a target and a selection.
//! The CLI's commands and the coordinator's `SubmitRun` both start here, so a project
//! compiles the same way wherever it is submitted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use std::sync::Arc;

use crate::compiler::{self, CompileOptions};
use crate::diagnostics::{Diagnostics, ProjectDiagnostic};
use crate::jinja::CompileQueries;
use crate::manifest::Manifest;
use crate::project::Project;
use crate::selection;
use crate::yaml::Yaml;

/// The result of compiling a project for a command: the manifest, the selected nodes and the
/// diagnostics to print.
#[derive(Debug)]
pub struct CommandOutcome {
    /// The manifest, when the project compiled without errors.
    pub manifest: Option<Manifest>,
    /// Selected unique ids.
    pub selected: BTreeSet<String>,
    /// Errors and warnings.
    pub diagnostics: Diagnostics,
}

/// Loads, compiles and selects, collecting every diagnostic.
pub fn run_compile(
    project_dir: &Path,
    vars: Option<&str>,
    target: &str,
    select: &[String],
    exclude: &[String],
    env: &BTreeMap<String, String>,
) -> CommandOutcome {
    compile_for_run(
        project_dir,
        vars,
        target,
        select,
        exclude,
        env,
        &BTreeSet::new(),
        None,
    )
}

/// Like [`run_compile`], rendering `is_incremental()` as true for the named models, with
/// `queries` answering compile-time queries (`run_query`, `statement`).
#[allow(clippy::too_many_arguments)]
pub fn compile_for_run(
    project_dir: &Path,
    vars: Option<&str>,
    target: &str,
    select: &[String],
    exclude: &[String],
    env: &BTreeMap<String, String>,
    incremental_models: &BTreeSet<String>,
    queries: Option<Arc<dyn CompileQueries>>,
) -> CommandOutcome {
    let mut diagnostics = Diagnostics::default();
    let cli_vars = match vars.map(parse_vars).transpose() {
        Ok(vars) => vars.unwrap_or_default(),
        Err(diagnostic) => {
            diagnostics.push(*diagnostic);
            return CommandOutcome {
                manifest: None,
                selected: BTreeSet::new(),
                diagnostics,
            };
        }
    };
    let loaded = Project::load(project_dir);
    diagnostics.extend(loaded.diagnostics);
    let Some(project) = loaded.project else {
        return CommandOutcome {
            manifest: None,
            selected: BTreeSet::new(),
            diagnostics,
        };
    };
    let options = CompileOptions {
        cli_vars,
        env: env.clone(),
        target_name: target.to_string(),
        incremental_models: incremental_models.clone(),
        queries,
    };
    let compilation = compiler::compile(&project, &options);
    diagnostics.extend(compilation.diagnostics);
    diagnostics.sort();
    let Some(manifest) = compilation.manifest.filter(|_| !diagnostics.has_errors()) else {
        return CommandOutcome {
            manifest: None,
            selected: BTreeSet::new(),
            diagnostics,
        };
    };
    match selection::select(&manifest, select, exclude) {
        Ok(chosen) => {
            for unmatched in chosen.unmatched {
                diagnostics.push(ProjectDiagnostic::warning(
                    "strata::selection",
                    format!("the selector '{unmatched}' matched no node"),
                ));
            }
            CommandOutcome {
                manifest: Some(manifest),
                selected: chosen.nodes,
                diagnostics,
            }
        }
        Err(err) => {
            diagnostics.push(ProjectDiagnostic::error("strata::selection", err.to_string()).with_hint(
                "selectors look like: name, +name, name+, tag:daily, path:models/gold, layer:silver, config.materialized:table",
            ));
            CommandOutcome {
                manifest: None,
                selected: BTreeSet::new(),
                diagnostics,
            }
        }
    }
}

/// Parses `--vars` (YAML or JSON) into a mapping; anything else is an error to show.
///
/// # Errors
/// A diagnostic for text that is not YAML or not a mapping.
pub fn parse_vars(
    text: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, Box<ProjectDiagnostic>> {
    let source = crate::diagnostics::SourceText::new("--vars", text);
    let yaml = Yaml::parse(&source)?;
    match yaml.to_json() {
        serde_json::Value::Object(vars) => Ok(vars),
        serde_json::Value::Null => Ok(serde_json::Map::new()),
        _ => Err(Box::new(
            ProjectDiagnostic::error(
                "strata::vars",
                format!("--vars must be a mapping, found {}", yaml.kind()),
            )
            .with_hint("write --vars '{name: value}'"),
        )),
    }
}
