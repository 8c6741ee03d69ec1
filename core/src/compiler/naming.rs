//! dbt's overridable naming macros: when the root project defines `generate_schema_name`
//! or `generate_alias_name`, it decides the relation of every model, seed and snapshot, as
//! in dbt; otherwise Strata's own rule stands (the configured schema, else the layer folder,
//! else `main`; the configured alias, else the node's name).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::NodeConfig;
use crate::diagnostics::ProjectDiagnostic;
use crate::jinja::{Relation, RenderInputs, Renderer};
use crate::manifest::ResourceType;

/// The macro that names a node's schema.
const SCHEMA_MACRO: &str = "generate_schema_name";
/// The macro that names a node's table.
const ALIAS_MACRO: &str = "generate_alias_name";

/// What a naming macro is told about a node (dbt's `node` argument, in part).
pub(super) struct NamedNode<'n> {
    /// Where a failure of the macro is reported.
    pub file: &'n std::path::Path,
    pub unique_id: &'n str,
    pub name: &'n str,
    pub resource_type: ResourceType,
    pub package: &'n str,
    /// The node's file, relative to its package.
    pub original_file_path: String,
    /// The file's folders under its resource folder (`staging` for `models/staging/x.sql`).
    pub folders: &'n [String],
    /// The file's name (`x.sql`).
    pub file_name: String,
    pub config: &'n NodeConfig,
}

impl NamedNode<'_> {
    fn value(&self) -> serde_json::Value {
        let fqn = super::fqn(self.package, self.folders, self.name);
        let mut path: Vec<&str> = self.folders.iter().map(String::as_str).collect();
        path.push(&self.file_name);
        serde_json::json!({
            "unique_id": self.unique_id,
            "name": self.name,
            "resource_type": self.resource_type.as_str(),
            "package_name": self.package,
            "fqn": fqn,
            "path": path.join("/"),
            "original_file_path": self.original_file_path,
            "config": self.config,
            "tags": self.config.tags,
        })
    }
}

/// A node's unique id with its configured schema and alias: what a naming answer depends on.
type AnswerKey = (String, Option<String>, Option<String>);

/// The root project's naming macros, with what they answered so far (each node's answer is
/// asked once per configuration) and the failures to report.
#[derive(Default)]
pub(super) struct Naming {
    /// What the macros see: vars and `target` (relations are not settled when they run).
    inputs: Arc<RenderInputs>,
    schema: bool,
    alias: bool,
    answers: RefCell<BTreeMap<AnswerKey, Relation>>,
    failures: RefCell<BTreeMap<String, ProjectDiagnostic>>,
}

impl Naming {
    /// Which naming macros the root project overrides.
    pub(super) fn new(renderer: &Renderer, inputs: &RenderInputs) -> Naming {
        Naming {
            inputs: Arc::new(inputs.clone()),
            schema: renderer.root_defines(SCHEMA_MACRO),
            alias: renderer.root_defines(ALIAS_MACRO),
            ..Naming::default()
        }
    }

    /// The relation of `node`: `default` (Strata's rule), with its schema and identifier
    /// replaced by what the root project's macros answer for the configured `schema` and
    /// `alias`. A macro that fails or answers nothing leaves Strata's answer and is reported
    /// by [`Naming::take_failures`].
    pub(super) fn relation(
        &self,
        renderer: &Renderer,
        node: &NamedNode<'_>,
        default: Relation,
    ) -> Relation {
        if !self.schema && !self.alias {
            return default;
        }
        let key = (
            node.unique_id.to_string(),
            node.config.schema.clone(),
            node.config.alias.clone(),
        );
        if let Some(known) = self.answers.borrow().get(&key) {
            return known.clone();
        }
        let value = node.value();
        let ask = |wanted: bool, name: &str, custom: Option<&str>, fallback: String| {
            if !wanted {
                return fallback;
            }
            match renderer.render_naming_macro(name, custom, &value, &self.inputs) {
                Ok(answer) if !answer.is_empty() => answer,
                outcome => {
                    let reason = outcome
                        .err()
                        .unwrap_or_else(|| String::from("it rendered nothing"));
                    self.failures.borrow_mut().insert(
                        format!("{name}:{}", node.unique_id),
                        ProjectDiagnostic::error(
                            "strata::naming_macro",
                            format!(
                                "{name} failed for {} '{}': {reason}",
                                node.resource_type.as_str(),
                                node.name
                            ),
                        )
                        .in_file(node.file)
                        .with_hint(format!(
                            "fix the project's {name} macro; it must render a name for every node"
                        )),
                    );
                    fallback
                }
            }
        };
        let schema = ask(
            self.schema,
            SCHEMA_MACRO,
            node.config.schema.as_deref(),
            default.schema.clone(),
        );
        let identifier = ask(
            self.alias,
            ALIAS_MACRO,
            node.config.alias.as_deref(),
            default.identifier.clone(),
        );
        let relation = Relation::new(schema, identifier);
        self.answers.borrow_mut().insert(key, relation.clone());
        relation
    }

    /// The macros' failures so far, once each.
    pub(super) fn take_failures(&self) -> Vec<ProjectDiagnostic> {
        std::mem::take(&mut *self.failures.borrow_mut())
            .into_values()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::compiler::{Compilation, compile_files};

    #[test]
    fn the_root_projects_macro_names_package_nodes_too_and_without_it_layers_do() {
        let files = [
            ("dbt_project.yml", "name: shop\n"),
            ("models/silver/orders.sql", "select 1 as id"),
            ("dbt_packages/ledger/dbt_project.yml", "name: ledger\n"),
            ("dbt_packages/ledger/models/entries.sql", "select 2 as id"),
        ];
        let relation = |compilation: &Compilation, id: &str| {
            let manifest = compilation.manifest.as_ref().expect("manifest");
            manifest.nodes[id].relation.as_ref().unwrap().to_string()
        };
        let plain = compile_files(&files);
        assert_eq!(relation(&plain, "model.shop.orders"), "silver.orders");
        let mut with_macro = files.to_vec();
        with_macro.push((
            "macros/naming.sql",
            "{% macro generate_schema_name(custom_schema_name, node) %}\
             {{ node.package_name }}_{{ target.name }}{% endmacro %}",
        ));
        let named = compile_files(&with_macro);
        assert_eq!(relation(&named, "model.shop.orders"), "shop_dev.orders");
        assert_eq!(
            relation(&named, "model.ledger.entries"),
            "ledger_dev.entries"
        );
    }

    #[test]
    fn a_failing_naming_macro_is_an_error_that_names_the_node() {
        let compilation = compile_files(&[
            ("dbt_project.yml", "name: shop\n"),
            ("models/orders.sql", "select 1 as id"),
            (
                "macros/naming.sql",
                "{% macro generate_alias_name(custom_alias_name=none, node=none) %}\
                 {{ exceptions.raise_compiler_error('no alias for ' ~ node.name) }}{% endmacro %}",
            ),
        ]);
        let text = compilation.diagnostics.to_string();
        assert!(compilation.manifest.is_none(), "{text}");
        assert!(
            text.contains("generate_alias_name failed for model 'orders'")
                && text.contains("no alias for orders"),
            "{text}"
        );
    }
}
