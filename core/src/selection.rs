//! Node selection with dbt's syntax: `--select` / `--exclude` with names, `+name`, `name+`,
//! `2+name`, `name+1`, `@name`, methods (`tag:`, `path:`, `config.materialized:`, `layer:`,
//! `resource_type:`, `source:`, `fqn:`, `package:`, `test_type:`, `test_name:`), a space for a
//! union and a comma for an intersection. Tests are selected along with the nodes they test
//! (dbt's "eager" indirect selection).

use std::collections::BTreeSet;

use crate::config::closest;
use crate::dag::Dag;
use crate::manifest::{Manifest, Node, ResourceType};

/// Methods a selector may use before the colon.
pub const METHODS: [&str; 10] = [
    "name",
    "tag",
    "path",
    "config",
    "layer",
    "resource_type",
    "source",
    "fqn",
    "package",
    "test_type",
];

/// Why a selector could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectionError {
    /// The selector is malformed.
    #[error("invalid selector '{selector}': {reason}")]
    Invalid {
        /// The selector as typed.
        selector: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The method before the colon is not one Strata knows.
    #[error("unknown selector method '{method}' in '{selector}'{hint}; use one of: {known}", known = METHODS.join(", "))]
    UnknownMethod {
        /// The selector as typed.
        selector: String,
        /// The method.
        method: String,
        /// " (did you mean …)" or empty.
        hint: String,
    },
}

/// The nodes a selection chose, and selectors that matched nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selection {
    /// Unique ids of the selected nodes.
    pub nodes: BTreeSet<String>,
    /// Selectors that matched no node, for a warning.
    pub unmatched: Vec<String>,
}

/// Applies `--select` and `--exclude`. An empty `select` selects every node.
///
/// # Errors
/// Returns an error for a malformed selector or an unknown method.
pub fn select(
    manifest: &Manifest,
    select: &[String],
    exclude: &[String],
) -> Result<Selection, SelectionError> {
    let dag = manifest.dag();
    let mut unmatched = Vec::new();
    let terms = |args: &[String]| -> Vec<String> {
        args.iter()
            .flat_map(|arg| arg.split_whitespace().map(str::to_string))
            .collect()
    };
    let select_terms = terms(select);
    let mut chosen: BTreeSet<String> = if select_terms.is_empty() {
        manifest.nodes.keys().cloned().collect()
    } else {
        let mut chosen = BTreeSet::new();
        for term in &select_terms {
            let matched = evaluate_term(manifest, &dag, term)?;
            if matched.is_empty() {
                unmatched.push(term.clone());
            }
            chosen.extend(matched);
        }
        add_tests_of(manifest, &mut chosen);
        chosen
    };
    for term in terms(exclude) {
        let mut excluded = evaluate_term(manifest, &dag, &term)?;
        if excluded.is_empty() {
            unmatched.push(term.clone());
        }
        add_tests_of(manifest, &mut excluded);
        chosen.retain(|id| !excluded.contains(id));
    }
    Ok(Selection {
        nodes: chosen,
        unmatched,
    })
}

/// Adds every test one of whose parents is selected (dbt's eager indirect selection).
fn add_tests_of(manifest: &Manifest, chosen: &mut BTreeSet<String>) {
    let tests: Vec<String> = manifest
        .nodes
        .values()
        .filter(|node| node.resource_type == ResourceType::Test)
        .filter(|node| node.depends_on.iter().any(|parent| chosen.contains(parent)))
        .map(|node| node.unique_id.clone())
        .collect();
    chosen.extend(tests);
}

fn evaluate_term(
    manifest: &Manifest,
    dag: &Dag,
    term: &str,
) -> Result<BTreeSet<String>, SelectionError> {
    let mut result: Option<BTreeSet<String>> = None;
    for atom in term.split(',') {
        let matched = evaluate_atom(manifest, dag, atom, term)?;
        result = Some(match result {
            None => matched,
            Some(previous) => previous.intersection(&matched).cloned().collect(),
        });
    }
    Ok(result.unwrap_or_default())
}

fn invalid(selector: &str, reason: impl Into<String>) -> SelectionError {
    SelectionError::Invalid {
        selector: selector.to_string(),
        reason: reason.into(),
    }
}

fn evaluate_atom(
    manifest: &Manifest,
    dag: &Dag,
    atom: &str,
    term: &str,
) -> Result<BTreeSet<String>, SelectionError> {
    if atom.is_empty() {
        return Err(invalid(term, "empty selector around a comma"));
    }
    let (at, rest) = match atom.strip_prefix('@') {
        Some(rest) => (true, rest),
        None => (false, atom),
    };
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    let (parents, rest) = if rest[digits..].starts_with('+') {
        let depth = if digits == 0 {
            None
        } else {
            Some(
                rest[..digits]
                    .parse::<usize>()
                    .map_err(|_| invalid(atom, "the depth before '+' is too large"))?,
            )
        };
        (Some(depth), &rest[digits + 1..])
    } else {
        (None, rest)
    };
    let (children, body) = match rest.rfind('+') {
        Some(plus) if rest[plus + 1..].chars().all(|c| c.is_ascii_digit()) => {
            let depth_text = &rest[plus + 1..];
            let depth = if depth_text.is_empty() {
                None
            } else {
                Some(
                    depth_text
                        .parse::<usize>()
                        .map_err(|_| invalid(atom, "the depth after '+' is too large"))?,
                )
            };
            (Some(depth), &rest[..plus])
        }
        _ => (None, rest),
    };
    if body.is_empty() {
        return Err(invalid(atom, "nothing to select between the operators"));
    }
    if at && (parents.is_some() || children.is_some()) {
        return Err(invalid(atom, "'@' cannot be combined with '+'"));
    }
    let base = match_method(manifest, body, atom)?;
    let mut selected = base.clone();
    if at {
        for id in &base {
            let descendants = dag.descendants(id, None);
            for descendant in descendants.iter().chain(std::iter::once(id)) {
                selected.extend(dag.ancestors(descendant, None));
            }
            selected.extend(descendants);
        }
        return Ok(selected);
    }
    for id in &base {
        if let Some(depth) = parents {
            selected.extend(dag.ancestors(id, depth));
        }
        if let Some(depth) = children {
            selected.extend(dag.descendants(id, depth));
        }
    }
    Ok(selected)
}

fn match_method(
    manifest: &Manifest,
    body: &str,
    atom: &str,
) -> Result<BTreeSet<String>, SelectionError> {
    let (method, value) = match body.split_once(':') {
        Some((method, value)) => (method, value),
        None if looks_like_path(body) => ("path", body),
        None => ("name", body),
    };
    if value.is_empty() {
        return Err(invalid(atom, format!("'{method}:' needs a value")));
    }
    let (method, argument) = match method.split_once('.') {
        Some((method, argument)) => (method, Some(argument)),
        None => (method, None),
    };
    let predicate: Box<dyn Fn(&Node) -> bool> = match (method, argument) {
        ("name", None) => Box::new(move |node: &Node| matches_name(node, value)),
        ("fqn", None) => Box::new(move |node: &Node| matches_fqn(node, value)),
        ("tag", None) => {
            Box::new(move |node: &Node| node.config.tags.iter().any(|tag| glob(value, tag)))
        }
        ("path", None) => {
            let wanted = value
                .trim_start_matches("./")
                .trim_end_matches('/')
                .to_string();
            Box::new(move |node: &Node| {
                let path = node.original_file_path.as_str();
                glob(&wanted, path)
                    || path
                        .strip_prefix(wanted.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            })
        }
        ("layer", None) => Box::new(move |node: &Node| {
            node.layer
                .as_deref()
                .is_some_and(|layer| glob(value, layer))
        }),
        ("resource_type", None) => {
            Box::new(move |node: &Node| node.resource_type.as_str() == value)
        }
        ("package", None) => Box::new(move |node: &Node| glob(value, &node.package_name)),
        ("source", None) => Box::new(move |node: &Node| {
            node.source
                .as_ref()
                .is_some_and(|info| match value.split_once('.') {
                    Some((source, table)) => {
                        glob(source, &info.source_name) && glob(table, &node.name)
                    }
                    None => glob(value, &info.source_name),
                })
        }),
        ("test_type", None) => Box::new(move |node: &Node| {
            node.test.as_ref().is_some_and(|test| {
                let kind = if test.test_name == "singular" {
                    "singular"
                } else {
                    "generic"
                };
                kind == value || (value == "data" && kind == "singular")
            })
        }),
        ("test_name", None) => Box::new(move |node: &Node| {
            node.test
                .as_ref()
                .is_some_and(|test| glob(value, &test.test_name))
        }),
        ("config", Some(key)) => {
            let key = key.to_string();
            Box::new(move |node: &Node| config_matches(node, &key, value))
        }
        (method, _) => {
            let full = match argument {
                Some(argument) => format!("{method}.{argument}"),
                None => method.to_string(),
            };
            let hint = closest(method, METHODS.iter().copied().chain(["test_name"]))
                .map(|best| format!(" (did you mean '{best}:'?)"))
                .unwrap_or_default();
            return Err(SelectionError::UnknownMethod {
                selector: atom.to_string(),
                method: full,
                hint,
            });
        }
    };
    Ok(manifest
        .nodes
        .values()
        .filter(|node| predicate(node))
        .map(|node| node.unique_id.clone())
        .collect())
}

fn looks_like_path(body: &str) -> bool {
    body.contains('/')
        || [".sql", ".csv", ".yml", ".yaml"]
            .iter()
            .any(|extension| body.ends_with(extension))
}

fn matches_name(node: &Node, pattern: &str) -> bool {
    if node.resource_type == ResourceType::Source {
        // `--select events` finds a model named events, not the source table.
        return false;
    }
    // As in dbt, a bare name is also the start of a fully-qualified name: a package's name
    // selects every node of the package.
    glob(pattern, &node.name)
        || node
            .fqn
            .first()
            .is_some_and(|package| glob(pattern, package))
        || (pattern.contains('.') && matches_fqn(node, pattern))
}

/// `fqn:project.folder.name`: every given part matches the start of the node's fqn, or the
/// parts after the project do.
fn matches_fqn(node: &Node, pattern: &str) -> bool {
    let parts: Vec<&str> = pattern.split('.').collect();
    let fits = |fqn: &[String]| {
        parts.len() <= fqn.len()
            && parts
                .iter()
                .zip(fqn)
                .all(|(part, actual)| glob(part, actual))
    };
    fits(&node.fqn) || fits(node.fqn.get(1..).unwrap_or_default())
}

fn config_matches(node: &Node, key: &str, wanted: &str) -> bool {
    match node.config.get(key) {
        Some(serde_json::Value::String(text)) => glob(wanted, &text),
        Some(serde_json::Value::Bool(flag)) => wanted.eq_ignore_ascii_case(&flag.to_string()),
        Some(serde_json::Value::Number(number)) => wanted == number.to_string(),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .any(|item| item.as_str().is_some_and(|text| glob(wanted, text))),
        _ => false,
    }
}

/// Shell-style matching (`*`, `?`, `[abc]`), as dbt's `fnmatch`; a pattern that is not a
/// valid glob (an unclosed `[`) matches only itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    match glob::Pattern::new(pattern) {
        Ok(compiled) => compiled.matches(text),
        Err(_) => pattern == text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_like_a_shell() {
        assert!(glob("stg_*", "stg_orders"));
        assert!(glob("*orders", "stg_orders"));
        assert!(glob("s?g_*s", "stg_orders"));
        assert!(!glob("stg_*", "fct_orders"));
        assert!(glob("a*b*c", "aXbYc"));
        assert!(!glob("a*b*c", "aXbY"));
        assert!(glob("stg_[ou]*", "stg_orders"));
        assert!(glob("broken[", "broken["));
    }
}
