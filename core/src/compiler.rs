//! Compiling a loaded project: render every node, resolve configuration, inline ephemeral
//! models, generate test SQL, build and check the DAG, and produce the [`Manifest`].
//!
//! Rendering happens in two passes, as in dbt: the first pass records `ref()`, `source()` and
//! `config()` calls (a model's own `config()` can change its schema or alias, which changes how
//! other models render a `ref` to it); the second pass re-renders only the nodes whose
//! references changed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::config::{
    ConfigLayer, EXTERNAL_MATERIALIZATION, Materialization, NodeConfig, closest, holds_template,
    rendered_value,
};
use crate::data_tests::{self, BUILT_IN_TESTS};
use crate::diagnostics::{Diagnostics, ProjectDiagnostic, SourceText};
use crate::export::ExportSpec;
use crate::jinja::{
    CompileQueries, Dependency, MacroPackage, ModelVersions, Relation, RenderInputs, Renderer,
};
use crate::manifest::{
    Column, IngestDeclaration, Manifest, Metadata, Node, ResourceType, SourceInfo, TestInfo,
    checksum,
};
use crate::project::{FolderConfig, Project, SeedFile, SqlFile, path_string};
use crate::properties::{
    ColumnDeclaration, NodeProperties, Properties, SourceDeclaration, SourceTable, TestDeclaration,
};
use crate::snapshots::SnapshotSpec;

/// Schema of seeds without a `schema` setting.
pub const SEED_SCHEMA: &str = "seeds";
/// Schema of models outside any layer folder (`target.schema`).
pub const DEFAULT_SCHEMA: &str = "main";
/// Prefix of the CTE an ephemeral model is inlined as.
pub const EPHEMERAL_PREFIX: &str = "__strata_cte__";

/// Inputs of a compile that do not come from the project folder.
#[derive(Debug, Clone, Default)]
pub struct CompileOptions {
    /// Vars from `--vars`.
    pub cli_vars: serde_json::Map<String, serde_json::Value>,
    /// Environment visible to `env_var()`.
    pub env: BTreeMap<String, String>,
    /// `target.name`; `dev` when empty.
    pub target_name: String,
    /// Models for which `is_incremental()` is true (incremental models whose table exists,
    /// outside a full refresh).
    pub incremental_models: BTreeSet<String>,
    /// What answers `run_query()` and `statement` blocks; without it they fail clearly.
    pub queries: Option<Arc<dyn CompileQueries>>,
}

/// The outcome of a compile: the manifest when there was no error, and every diagnostic.
#[derive(Debug)]
pub struct Compilation {
    /// The manifest, present when no diagnostic is an error.
    pub manifest: Option<Manifest>,
    /// Errors and warnings, sorted by file and line.
    pub diagnostics: Diagnostics,
}

/// A model or singular test on its way through the passes.
struct Draft<'a> {
    unique_id: String,
    /// The root project, or the installed package the file belongs to.
    package: &'a Project,
    /// The node's name: its file's stem, or `<model>_v<v>` for a version of a model.
    name: String,
    file: &'a SqlFile,
    resource_type: ResourceType,
    properties: Option<&'a NodeProperties>,
    base_layers: Vec<ConfigLayer>,
    config: NodeConfig,
    relation: Option<Relation>,
    /// Relations of every dependency as the first pass rendered them.
    seen_relations: BTreeMap<Dependency, Option<Relation>>,
    dependencies: Vec<Dependency>,
    sql: Option<String>,
    /// Why the SQL is provisional (it asked about a table not built yet).
    deferred: Option<String>,
}

/// The unique ids references resolve to.
struct NodeIds {
    /// Enabled models and seeds, by name.
    models: BTreeMap<String, String>,
    /// Source tables, by (source, table).
    sources: BTreeMap<(String, String), String>,
}

impl NodeIds {
    /// The node a `ref()` or `source()` names, when it exists.
    fn of(&self, dependency: &Dependency) -> Option<String> {
        match dependency {
            Dependency::Ref(name) => self.models.get(name).cloned(),
            Dependency::Source(source, table) => {
                self.sources.get(&(source.clone(), table.clone())).cloned()
            }
        }
    }
}

/// A compile in progress: the project, what each phase has produced so far, and every
/// diagnostic. Each phase is a method; [`compile`] runs them in order.
struct Compiler<'a> {
    project: &'a Project,
    options: &'a CompileOptions,
    props: &'a Properties,
    renderer: Renderer,
    errors: Vec<ProjectDiagnostic>,
    target_name: String,
    model_properties: BTreeMap<&'a str, &'a NodeProperties>,
    snapshot_properties: BTreeMap<&'a str, &'a NodeProperties>,
    seed_properties: BTreeMap<&'a str, &'a NodeProperties>,
    /// Names of models and seeds so far: `ref()` reaches both, so they share a namespace.
    names: BTreeMap<String, SourceText>,
    drafts: Vec<Draft<'a>>,
    seeds: Vec<Node>,
    source_nodes: Vec<Node>,
    /// What rendering sees: relations, sources, vars, environment, target.
    inputs: RenderInputs,
    /// Drafts that failed to render (no node is made of them).
    failed: BTreeSet<String>,
    /// The root project's `generate_schema_name` / `generate_alias_name`, when it has them.
    naming: Naming,
}

/// Compiles a project. Never panics on user input; every problem becomes a diagnostic.
pub fn compile(project: &Project, options: &CompileOptions) -> Compilation {
    let mut errors: Vec<ProjectDiagnostic> = Vec::new();
    let properties = Properties::of_project(project, &mut errors);
    let mut compiler = Compiler::new(project, options, &properties, errors);
    compiler.model_drafts();
    compiler.snapshot_drafts();
    compiler.seeds();
    compiler.unused_folder_configs();
    compiler.sources();
    compiler.singular_tests();
    compiler.first_pass();
    let final_inputs = compiler.settle_relations();
    compiler.second_pass(&final_inputs);
    let (mut nodes, ids) = compiler.nodes();
    compiler.generic_tests(&mut nodes, &ids, &final_inputs);
    inline_ephemeral_models(&mut nodes);
    compiler.finish(nodes)
}

impl<'a> Compiler<'a> {
    fn new(
        project: &'a Project,
        options: &'a CompileOptions,
        props: &'a Properties,
        mut errors: Vec<ProjectDiagnostic>,
    ) -> Compiler<'a> {
        let packages: Vec<MacroPackage> = std::iter::once(project)
            .chain(&project.packages)
            .map(|package| MacroPackage {
                name: &package.name,
                files: &package.macros,
            })
            .collect();
        let renderer = Renderer::new(
            &packages,
            project.dispatch.clone(),
            options.queries.clone(),
            &mut errors,
        );
        let target_name = if options.target_name.is_empty() {
            String::from("dev")
        } else {
            options.target_name.clone()
        };
        let model_properties = index_properties(&props.models, "model", &mut errors);
        let seed_properties = index_properties(&props.seeds, "seed", &mut errors);
        let snapshot_properties = index_properties(&props.snapshots, "snapshot", &mut errors);
        let inputs = RenderInputs {
            project_name: project.name.clone(),
            project_vars: project.vars.clone(),
            cli_vars: options.cli_vars.clone(),
            package_vars: package_vars(&project.packages),
            env: options.env.clone(),
            target_name: target_name.clone(),
            target_schema: DEFAULT_SCHEMA.to_string(),
            ..RenderInputs::default()
        };
        let naming = Naming::new(&renderer, &inputs);
        Compiler {
            naming,
            project,
            options,
            props,
            renderer,
            errors,
            target_name,
            model_properties,
            snapshot_properties,
            seed_properties,
            names: BTreeMap::new(),
            drafts: Vec::new(),
            seeds: Vec::new(),
            source_nodes: Vec::new(),
            inputs,
            failed: BTreeSet::new(),
        }
    }

    /// Models become drafts; models and seeds share one namespace, as `ref()` reaches both.
    fn model_drafts(&mut self) {
        let properties = std::mem::take(&mut self.model_properties);
        self.sql_drafts(
            |project| &project.models,
            ResourceType::Model,
            |project| &project.models_config,
            &properties,
        );
        let (unversioned, versioned): (BTreeMap<_, _>, BTreeMap<_, _>) = properties
            .iter()
            .map(|(name, props)| (*name, *props))
            .partition(|(_, props)| props.versions.is_empty());
        self.orphan_properties(&unversioned, "model", "models/<layer>/<name>.sql");
        self.model_versions(&versioned);
        self.model_properties = properties;
    }

    /// Versioned models: each version's file is a node `model.<project>.<name>.v<v>` with
    /// the model's properties and the version's config over them; `ref()` learns the
    /// versions and which is the latest.
    fn model_versions(&mut self, versioned: &BTreeMap<&'a str, &'a NodeProperties>) {
        for (name, properties) in versioned {
            let mut versions = ModelVersions::default();
            for version in &properties.versions {
                let stem = version.file_stem(name);
                let layers = self.rendered_layers([&properties.config, &version.config]);
                let Some(draft) = self
                    .drafts
                    .iter_mut()
                    .find(|draft| draft.resource_type == ResourceType::Model && draft.name == stem)
                else {
                    self.errors.push(
                        version
                            .origin
                            .error(
                                "strata::model_version",
                                format!(
                                    "version {} of model '{name}' has no SQL file",
                                    version.version
                                ),
                            )
                            .with_hint(format!(
                                "write models/…/{stem}.sql, or name its file with 'defined_in:'"
                            )),
                    );
                    continue;
                };
                draft.unique_id =
                    format!("model.{}.{name}.v{}", draft.package.name, version.version);
                draft.name = version.node_name(name);
                draft.properties = Some(properties);
                draft.base_layers.extend(layers);
                draft.config = NodeConfig::resolve(
                    default_materialization(draft.resource_type),
                    &draft.base_layers,
                );
                versions
                    .nodes
                    .insert(version.version.clone(), draft.name.clone());
            }
            let latest = properties.latest_version.clone().or_else(|| {
                versions
                    .nodes
                    .keys()
                    .max_by(|a, b| version_order(a, b))
                    .cloned()
            });
            if let Some(latest) = latest.and_then(|v| versions.nodes.get(&v).cloned()) {
                versions.latest = latest;
                self.inputs.versions.insert((*name).to_string(), versions);
            }
        }
    }

    /// Snapshots become drafts too: `ref()` reaches them like models.
    fn snapshot_drafts(&mut self) {
        let properties = std::mem::take(&mut self.snapshot_properties);
        self.sql_drafts(
            |project| &project.snapshots,
            ResourceType::Snapshot,
            |project| &project.snapshots_config,
            &properties,
        );
        self.orphan_properties(&properties, "snapshot", "snapshots/<name>.sql");
        self.snapshot_properties = properties;
    }

    /// Drafts of the SQL files of one kind (`files` of each) of the root project and of each
    /// package, configured by their folder blocks and properties.
    fn sql_drafts(
        &mut self,
        files: fn(&Project) -> &[SqlFile],
        resource_type: ResourceType,
        block: FolderBlock,
        properties: &BTreeMap<&'a str, &'a NodeProperties>,
    ) {
        let what = resource_type.as_str();
        let project = self.project;
        for package in members(project) {
            for file in files(package) {
                if let Some(first) = self.names.get(&file.name) {
                    self.errors.push(
                        ProjectDiagnostic::error(
                            "strata::duplicate_name",
                            format!("two {what}s are named '{}'", file.name),
                        )
                        .in_file(&file.source.path)
                        .with_hint(format!(
                            "the other is {}; rename one of the files",
                            first.path.display()
                        )),
                    );
                    continue;
                }
                self.names.insert(file.name.clone(), file.source.clone());
                let properties = properties.get(file.name.as_str()).copied();
                let folder_layers = folder_layers(
                    self.project,
                    package,
                    block,
                    &path_with_stem(&file.folders, &file.name),
                );
                let property_layer = properties.map(|properties| &properties.config);
                let base_layers =
                    self.rendered_layers(folder_layers.into_iter().chain(property_layer));
                let config =
                    NodeConfig::resolve(default_materialization(resource_type), &base_layers);
                self.drafts.push(Draft {
                    unique_id: format!("{what}.{}.{}", package.name, file.name),
                    package,
                    name: file.name.clone(),
                    file,
                    resource_type,
                    properties,
                    relation: None,
                    config,
                    base_layers,
                    seen_relations: BTreeMap::new(),
                    dependencies: Vec::new(),
                    sql: None,
                    deferred: None,
                });
            }
        }
    }

    /// Warns about properties of a kind of node that name no file.
    fn orphan_properties(
        &mut self,
        properties: &BTreeMap<&'a str, &'a NodeProperties>,
        what: &str,
        expected: &str,
    ) {
        for (name, properties) in properties {
            if !self.names.contains_key(*name) {
                self.errors.push(
                    ProjectDiagnostic::warning(
                        "strata::orphan_properties",
                        format!("{what} '{name}' is described here but has no SQL"),
                    )
                    .at(
                        &properties.origin.source,
                        properties.origin.line,
                        properties.origin.column,
                    )
                    .with_hint(closest_hint(
                        name,
                        self.names.keys().map(String::as_str),
                        expected,
                    )),
                );
            }
        }
    }

    /// Seeds of the root project and of each package become nodes.
    fn seeds(&mut self) {
        for member in members(self.project) {
            for seed in &member.seeds {
                self.seed(member, seed);
            }
        }
    }

    /// A seed becomes a node (it needs no rendering); its `column_types` must name columns.
    fn seed(&mut self, package: &'a Project, seed: &'a SeedFile) {
        if self.names.contains_key(&seed.name) {
            self.errors.push(
                ProjectDiagnostic::error(
                    "strata::duplicate_name",
                    format!("a seed and a model are both named '{}'", seed.name),
                )
                .in_file(&seed.path)
                .with_hint("ref() reaches models and seeds by name; rename one"),
            );
            return;
        }
        self.names
            .insert(seed.name.clone(), SourceText::new(&seed.path, ""));
        if !std::ptr::eq(package, self.project) {
            self.inputs
                .node_packages
                .insert(seed.name.clone(), package.name.clone());
        }
        let properties = self.seed_properties.get(seed.name.as_str()).copied();
        let folder_layers = folder_layers(
            self.project,
            package,
            |project| &project.seeds_config,
            &path_with_stem(&seed.folders, &seed.name),
        );
        let property_layer = properties.map(|properties| &properties.config);
        let layers = self.rendered_layers(folder_layers.into_iter().chain(property_layer));
        let mut config = NodeConfig::resolve(Materialization::Seed, &layers);
        config.materialized = Materialization::Seed;
        for column in config.column_types.keys() {
            if !seed
                .columns
                .iter()
                .any(|name| name.eq_ignore_ascii_case(column))
            {
                // dbt ignores such a type; so does Strata, with a word.
                let diagnostic = ProjectDiagnostic::warning(
                    "strata::seed",
                    format!(
                        "column_types names '{column}', which is not a column of seed '{}'; it is ignored",
                        seed.name
                    ),
                )
                .with_hint(format!("its columns are: {}", seed.columns.join(", ")));
                self.errors.push(match properties {
                    Some(p) => diagnostic.at(&p.origin.source, p.origin.line, p.origin.column),
                    None => diagnostic.in_file(&package.project_file.path),
                });
            }
        }
        let relation = Relation::new(
            config
                .schema
                .clone()
                .unwrap_or_else(|| SEED_SCHEMA.to_string()),
            config.alias.clone().unwrap_or_else(|| seed.name.clone()),
        );
        let unique_id = format!("seed.{}.{}", package.name, seed.name);
        let named = NamedNode {
            file: &seed.path,
            unique_id: &unique_id,
            name: &seed.name,
            resource_type: ResourceType::Seed,
            package: &package.name,
            original_file_path: path_string(in_package(package, &seed.path)),
            folders: &seed.folders,
            file_name: file_name(&seed.path),
            config: &config,
        };
        let relation = self.naming.relation(&self.renderer, &named, relation);
        let mut columns: Vec<Column> = seed
            .columns
            .iter()
            .map(|name| Column {
                name: name.clone(),
                description: String::new(),
                data_type: config.column_types.get(name).cloned(),
            })
            .collect();
        if let Some(properties) = properties {
            merge_column_docs(&mut columns, &properties.columns);
        }
        let fqn = fqn(&package.name, &seed.folders, &seed.name);
        self.seeds.push(Node {
            unique_id: unique_id.clone(),
            resource_type: ResourceType::Seed,
            name: seed.name.clone(),
            package_name: package.name.clone(),
            original_file_path: path_string(&seed.path),
            layer: None,
            fqn,
            relation_name: Some(relation.to_string()),
            relation: Some(relation),
            description: properties
                .map(|p| p.description.clone())
                .unwrap_or_default(),
            columns,
            depends_on: Vec::new(),
            raw_code: String::new(),
            compiled_code: None,
            compiled_path: None,
            checksum: checksum(&seed.columns.join(",")),
            test: None,
            source: None,
            snapshot: None,
            deferred_compile: None,
            exports: Vec::new(),
            config,
        });
    }

    /// Folder blocks of the project file that apply to nothing are most likely typos.
    fn unused_folder_configs(&mut self) {
        for (config, paths, what) in [
            (
                &self.project.models_config,
                self.project
                    .models
                    .iter()
                    .map(|file| path_with_stem(&file.folders, &file.name))
                    .collect::<Vec<_>>(),
                "models",
            ),
            (
                &self.project.seeds_config,
                self.project
                    .seeds
                    .iter()
                    .map(|seed| path_with_stem(&seed.folders, &seed.name))
                    .collect(),
                "seeds",
            ),
        ] {
            for (path, line, column) in config.unused_paths(&self.project.name, &paths) {
                let folders: BTreeSet<&str> = paths
                    .iter()
                    .flat_map(|path| path.iter().map(String::as_str))
                    .collect();
                let last = path.rsplit('.').next().unwrap_or_default();
                let hint = match closest(last, folders.iter().copied()) {
                    Some(best) => format!("did you mean '{best}'?"),
                    None => format!(
                        "no {what} are under this path; remove the block or fix the folder name"
                    ),
                };
                let diagnostic = ProjectDiagnostic::warning(
                    "strata::unused_config",
                    format!("'{what}: {path}' applies to no {what}"),
                );
                self.errors.push(
                    if line > 0 {
                        diagnostic.at(&self.project.project_file, line, column)
                    } else {
                        diagnostic.in_file(&self.project.project_file.path)
                    }
                    .with_hint(hint),
                );
            }
        }
    }

    /// Sources become nodes, with their rendered location and file format; seeds and sources
    /// become relations that `ref()` and `source()` render to.
    fn sources(&mut self) {
        {
            let string_inputs = Arc::new(self.inputs.clone());
            let mut seen: BTreeMap<(String, String), ()> = BTreeMap::new();
            for source in &self.props.sources {
                for table in &source.tables {
                    let key = (source.name.clone(), table.name.clone());
                    if seen.insert(key.clone(), ()).is_some() {
                        self.errors.push(table.origin.error(
                            "strata::duplicate_source",
                            format!(
                                "source table '{}.{}' is declared twice",
                                source.name, table.name
                            ),
                        ));
                        continue;
                    }
                    let ResolvedSource {
                        schema,
                        identifier,
                        location,
                        format,
                    } = resolve_source(
                        &self.renderer,
                        &string_inputs,
                        source,
                        table,
                        &mut self.errors,
                    );
                    let relation = Relation::new(schema, identifier.clone());
                    self.inputs.sources.insert(key, relation.clone());
                    let mut columns = Vec::new();
                    merge_column_docs(&mut columns, &table.columns);
                    self.source_nodes.push(Node {
                        unique_id: format!(
                            "source.{}.{}.{}",
                            source.package, source.name, table.name
                        ),
                        resource_type: ResourceType::Source,
                        name: table.name.clone(),
                        package_name: source.package.clone(),
                        original_file_path: path_string(&table.origin.source.path),
                        layer: None,
                        fqn: vec![
                            source.package.clone(),
                            source.name.clone(),
                            table.name.clone(),
                        ],
                        relation_name: Some(relation.to_string()),
                        relation: Some(relation),
                        config: NodeConfig::resolve(Materialization::Table, []),
                        description: if table.description.is_empty() {
                            source.description.clone()
                        } else {
                            table.description.clone()
                        },
                        columns,
                        depends_on: Vec::new(),
                        raw_code: String::new(),
                        compiled_code: None,
                        compiled_path: None,
                        // Sources without an ingest block keep the checksum they had.
                        checksum: checksum(&match &table.ingest {
                            None => format!("{location:?}{format:?}"),
                            Some(ingest) => format!("{location:?}{format:?}{ingest:?}"),
                        }),
                        test: None,
                        source: Some(SourceInfo {
                            source_name: source.name.clone(),
                            identifier: identifier.clone(),
                            location,
                            format,
                            ingest: table.ingest.clone().map(|spec| IngestDeclaration {
                                spec,
                                origin: format!(
                                    "{}:{}",
                                    path_string(&table.origin.source.path),
                                    table.origin.line
                                ),
                            }),
                        }),
                        snapshot: None,
                        deferred_compile: None,
                        exports: Vec::new(),
                    });
                }
            }
        }
        for seed in &self.seeds {
            if let Some(relation) = &seed.relation {
                self.inputs
                    .relations
                    .insert(seed.name.clone(), relation.clone());
            }
        }
    }

    /// Clones `layers`, with their templated settings rendered (see [`render_templated`]).
    fn rendered_layers<'l>(
        &mut self,
        layers: impl IntoIterator<Item = &'l ConfigLayer>,
    ) -> Vec<ConfigLayer> {
        let layers: Vec<&ConfigLayer> = layers.into_iter().collect();
        // Most layers have no template: the render inputs are copied only for one that has.
        if layers.iter().all(|layer| layer.templated.is_empty()) {
            return layers.into_iter().cloned().collect();
        }
        let inputs = Arc::new(self.inputs.clone());
        let project_file = &self.project.project_file;
        layers
            .into_iter()
            .map(|layer| {
                render_templated(
                    layer,
                    &self.renderer,
                    &inputs,
                    project_file,
                    &mut self.errors,
                )
            })
            .collect()
    }

    /// Singular tests of the root project and of each package become drafts: they render
    /// like models.
    fn singular_tests(&mut self) {
        let project = self.project;
        for (package, file) in members(project)
            .flat_map(|member| member.singular_tests.iter().map(move |file| (member, file)))
        {
            let folder_layers = folder_layers(
                project,
                package,
                |project| &project.tests_config,
                &path_with_stem(&file.folders, &file.name),
            );
            let layers = self.rendered_layers(folder_layers);
            let mut config = NodeConfig::resolve(Materialization::Test, &layers);
            config.materialized = Materialization::Test;
            self.drafts.push(Draft {
                unique_id: format!("test.{}.{}", package.name, file.name),
                package,
                name: file.name.clone(),
                file,
                resource_type: ResourceType::Test,
                properties: None,
                base_layers: layers,
                config,
                relation: None,
                seen_relations: BTreeMap::new(),
                dependencies: Vec::new(),
                sql: None,
                deferred: None,
            });
        }
    }

    /// First pass: relations from configuration outside the SQL, then every draft rendered,
    /// recording its references and its own `config()`.
    fn first_pass(&mut self) {
        for draft in &mut self.drafts {
            if draft.resource_type.is_built_from_sql() {
                draft.relation = Some(node_relation(draft, &self.renderer, &self.naming));
                if draft.config.enabled {
                    self.inputs.relations.insert(
                        draft.name.clone(),
                        draft
                            .relation
                            .clone()
                            .unwrap_or_else(|| Relation::new("", "")),
                    );
                } else {
                    self.inputs.disabled.insert(draft.name.clone());
                }
            }
            self.inputs
                .base_configs
                .insert(draft.name.clone(), draft.base_layers.clone());
            if !std::ptr::eq(draft.package, self.project) {
                self.inputs
                    .node_packages
                    .insert(draft.name.clone(), draft.package.name.clone());
            }
        }
        self.inputs.declared_columns = self.declared_columns();
        let first_inputs = Arc::new(self.inputs.clone());
        for draft in &mut self.drafts {
            if !draft.config.enabled {
                continue;
            }
            if let Err(diagnostic) = self.renderer.add(&draft.file.source, &draft.name) {
                self.errors.push(*diagnostic);
                self.failed.insert(draft.unique_id.clone());
                continue;
            }
            // A model's own `config(materialized='incremental')` is only known after rendering:
            // render the listed models as incremental and re-render below if they are not.
            let is_incremental = self.options.incremental_models.contains(&draft.name);
            match self.renderer.render(
                &draft.file.source,
                &draft.name,
                &first_inputs,
                is_incremental,
                draft.relation.as_ref(),
            ) {
                Ok(rendered) => {
                    let mut layers = draft.base_layers.clone();
                    layers.push(rendered.captured.config.clone());
                    draft.config =
                        NodeConfig::resolve(default_materialization(draft.resource_type), &layers);
                    if draft.resource_type == ResourceType::Test {
                        draft.config.materialized = Materialization::Test;
                    } else if draft.resource_type == ResourceType::Snapshot {
                        draft.config.materialized = Materialization::Snapshot;
                        if let Some(problem) = snapshot_problem(draft.file, &draft.config) {
                            self.failed.insert(draft.unique_id.clone());
                            self.errors.push(problem);
                        }
                    } else if matches!(
                        draft.config.materialized,
                        Materialization::Seed | Materialization::Test | Materialization::Snapshot
                    ) {
                        self.errors.push(
                            ProjectDiagnostic::error(
                                "strata::config",
                                format!(
                                    "a model cannot be materialized as '{}'",
                                    draft.config.materialized
                                ),
                            )
                            .in_file(&draft.file.source.path)
                            .with_hint("use table, view, incremental or ephemeral"),
                        );
                        self.failed.insert(draft.unique_id.clone());
                    }
                    draft.seen_relations = rendered
                        .captured
                        .dependencies
                        .iter()
                        .map(|dependency| {
                            (dependency.clone(), relation_of(dependency, &first_inputs))
                        })
                        .collect();
                    draft.dependencies = rendered.captured.dependencies;
                    draft.deferred = rendered.captured.deferred;
                    draft.sql = Some(rendered.sql);
                }
                Err(diagnostic) => {
                    self.errors.push(*diagnostic);
                    self.failed.insert(draft.unique_id.clone());
                }
            }
        }
    }

    /// The final relations and disabled models, now that in-SQL config is known; two models
    /// may not share a relation.
    fn settle_relations(&mut self) -> Arc<RenderInputs> {
        let mut final_inputs = self.inputs.clone();
        for draft in &self.drafts {
            if !draft.resource_type.is_built_from_sql() {
                continue;
            }
            final_inputs.relations.remove(&draft.name);
            final_inputs.disabled.remove(&draft.name);
            if draft.config.enabled {
                let relation = node_relation(draft, &self.renderer, &self.naming);
                final_inputs.relations.insert(draft.name.clone(), relation);
            } else {
                final_inputs.disabled.insert(draft.name.clone());
            }
        }
        self.errors.extend(self.naming.take_failures());
        check_unique_relations(&self.drafts, &self.seeds, &final_inputs, &mut self.errors);
        final_inputs.declared_columns = self.declared_columns();
        Arc::new(final_inputs)
    }

    /// The columns known without the warehouse, by relation: seeds' headers, and the
    /// columns property files declare for sources, models and snapshots.
    fn declared_columns(&self) -> BTreeMap<Relation, Vec<(String, String)>> {
        let of_nodes = self
            .seeds
            .iter()
            .chain(&self.source_nodes)
            .filter_map(|node| {
                let columns: Vec<(String, String)> = node
                    .columns
                    .iter()
                    .map(|c| (c.name.clone(), c.data_type.clone().unwrap_or_default()))
                    .collect();
                Some((node.relation.clone()?, columns))
            });
        let of_drafts = self
            .drafts
            .iter()
            .filter(|draft| draft.resource_type.is_built_from_sql())
            .filter_map(|draft| {
                let declared = &draft.properties?.columns;
                let columns = declared
                    .iter()
                    .map(|c| (c.name.clone(), c.data_type.clone().unwrap_or_default()))
                    .collect();
                Some((node_relation(draft, &self.renderer, &self.naming), columns))
            });
        of_nodes
            .chain(of_drafts)
            .filter(|(_, columns): &(Relation, Vec<_>)| !columns.is_empty())
            .collect()
    }

    /// Second pass, only where a reference (or the model's own relation or incremental state)
    /// now renders differently; references to disabled models are errors.
    fn second_pass(&mut self, final_inputs: &Arc<RenderInputs>) {
        for draft in &mut self.drafts {
            if !draft.config.enabled
                || self.failed.contains(&draft.unique_id)
                || draft.sql.is_none()
            {
                continue;
            }
            for dependency in &draft.dependencies {
                if let Dependency::Ref(name) = dependency
                    && final_inputs.disabled.contains(name)
                {
                    self.errors.push(
                        locate(&draft.file.source, name)
                            .map_or_else(
                                || {
                                    ProjectDiagnostic::error("strata::disabled_ref", "")
                                        .in_file(&draft.file.source.path)
                                },
                                |(start, end)| {
                                    ProjectDiagnostic::error("strata::disabled_ref", "").at_range(
                                        &draft.file.source,
                                        start,
                                        end,
                                    )
                                },
                            )
                            .with_hint(format!("enable '{name}' or remove the reference")),
                    );
                    if let Some(last) = self.errors.last_mut() {
                        last.message = format!(
                            "'{name}' is disabled (enabled: false), so it cannot be referenced"
                        );
                    }
                    self.failed.insert(draft.unique_id.clone());
                }
            }
            let own_relation = draft
                .resource_type
                .is_built_from_sql()
                .then(|| node_relation(draft, &self.renderer, &self.naming));
            let rendered_incremental = self.options.incremental_models.contains(&draft.name);
            let is_incremental_now =
                rendered_incremental && draft.config.materialized == Materialization::Incremental;
            let changed = own_relation != draft.relation
                || rendered_incremental != is_incremental_now
                || draft
                    .seen_relations
                    .iter()
                    .any(|(dependency, seen)| relation_of(dependency, final_inputs) != *seen);
            draft.relation = own_relation;
            if changed && !self.failed.contains(&draft.unique_id) {
                let is_incremental = is_incremental_now;
                match self.renderer.render(
                    &draft.file.source,
                    &draft.name,
                    final_inputs,
                    is_incremental,
                    draft.relation.as_ref(),
                ) {
                    Ok(rendered) => {
                        draft.dependencies = rendered.captured.dependencies;
                        draft.deferred = rendered.captured.deferred;
                        draft.sql = Some(rendered.sql);
                    }
                    Err(diagnostic) => {
                        self.errors.push(*diagnostic);
                        self.failed.insert(draft.unique_id.clone());
                    }
                }
            }
        }
    }

    /// The unique ids `ref()` and `source()` resolve to: enabled models and seeds by name,
    /// source tables by (source, table).
    fn node_ids(&self) -> NodeIds {
        let models = self
            .drafts
            .iter()
            .filter(|draft| draft.resource_type.is_built_from_sql() && draft.config.enabled)
            .map(|draft| (draft.name.clone(), draft.unique_id.clone()))
            .chain(
                self.seeds
                    .iter()
                    .map(|seed| (seed.name.clone(), seed.unique_id.clone())),
            )
            .collect();
        let sources = self
            .source_nodes
            .iter()
            .filter_map(|node| {
                node.source.as_ref().map(|info| {
                    (
                        (info.source_name.clone(), node.name.clone()),
                        node.unique_id.clone(),
                    )
                })
            })
            .collect();
        NodeIds { models, sources }
    }

    /// The nodes of rendered drafts, seeds and sources.
    fn nodes(&mut self) -> (BTreeMap<String, Node>, NodeIds) {
        let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
        let (mut external, mut hooked) = (Vec::new(), Vec::new());
        // Cloned for the first post_hook only: most projects have none.
        let hook_inputs = std::cell::OnceCell::new();
        let ids = self.node_ids();
        let dependency_id = |dependency: &Dependency| ids.of(dependency);
        for draft in &self.drafts {
            if !draft.config.enabled || self.failed.contains(&draft.unique_id) {
                continue;
            }
            let Some(sql) = &draft.sql else { continue };
            let fqn = fqn(&draft.package.name, &draft.file.folders, &draft.name);
            let mut columns = Vec::new();
            if let Some(properties) = draft.properties {
                merge_column_docs(&mut columns, &properties.columns);
            }
            let mut depends_on: Vec<String> = draft
                .dependencies
                .iter()
                .filter_map(&dependency_id)
                .collect();
            depends_on.sort();
            depends_on.dedup();
            let original = path_string(&draft.file.source.path);
            // Partitioned tables are not exported (one file cannot hold their folders).
            let exportable =
                draft.resource_type == ResourceType::Model && draft.config.partition_by.is_empty();
            let mut exports = Vec::new();
            if draft.config.extra.contains_key(EXTERNAL_MATERIALIZATION) {
                let alias = draft
                    .relation
                    .as_ref()
                    .map_or(draft.name.as_str(), |relation| relation.identifier.as_str());
                match ExportSpec::of(&draft.config, alias) {
                    Err(message) => self.errors.push(
                        ProjectDiagnostic::error(
                            "strata::external",
                            format!("model '{}': {message}", draft.name),
                        )
                        .in_file(&draft.file.source.path),
                    ),
                    Ok(Some(spec)) if exportable => exports.push(spec),
                    Ok(_) => external.push(draft),
                }
            }
            let (copies, not_run) = self.hook_exports(draft, &hook_inputs, exportable);
            exports.extend(copies);
            if not_run {
                hooked.push(draft);
            }
            if let Some(reason) = &draft.deferred {
                self.errors.push(
                    ProjectDiagnostic::warning(
                        "strata::deferred_compile",
                        format!(
                            "{} '{}' is compiled again when its parents are built: {reason}",
                            draft.resource_type.as_str(),
                            draft.name
                        ),
                    )
                    .in_file(&draft.file.source.path)
                    .with_hint("until then its compiled SQL sees no columns for that table (as dbt's compile does)"),
                );
            }
            nodes.insert(
                draft.unique_id.clone(),
                Node {
                    unique_id: draft.unique_id.clone(),
                    resource_type: draft.resource_type,
                    name: draft.name.clone(),
                    package_name: draft.package.name.clone(),
                    layer: if draft.resource_type == ResourceType::Model {
                        draft.file.layer().map(str::to_string)
                    } else {
                        None
                    },
                    fqn,
                    relation_name: draft.relation.as_ref().map(ToString::to_string),
                    relation: draft.relation.clone(),
                    config: draft.config.clone(),
                    description: draft
                        .properties
                        .map(|p| p.description.clone())
                        .unwrap_or_default(),
                    columns,
                    depends_on,
                    // A snapshot's text is its block, blanked around: the block is its code.
                    raw_code: if draft.resource_type == ResourceType::Snapshot {
                        draft.file.source.text.trim().to_string()
                    } else {
                        draft.file.source.text.to_string()
                    },
                    compiled_code: Some(tidy_sql(sql)),
                    compiled_path: Some(compiled_path(
                        draft.package,
                        draft.resource_type,
                        &draft.file.source.path,
                        &draft.name,
                    )),
                    checksum: checksum(&draft.file.source.text),
                    test: (draft.resource_type == ResourceType::Test).then(|| TestInfo {
                        test_name: String::from("singular"),
                        arguments: serde_json::Map::new(),
                        attached_node: None,
                        column_name: None,
                    }),
                    source: None,
                    snapshot: (draft.resource_type == ResourceType::Snapshot)
                        .then(|| SnapshotSpec::from_config(&draft.config).ok())
                        .flatten(),
                    deferred_compile: draft.deferred.clone(),
                    exports,
                    original_file_path: original,
                },
            );
        }
        let seeds = std::mem::take(&mut self.seeds);
        let sources = std::mem::take(&mut self.source_nodes);
        for node in seeds.into_iter().chain(sources) {
            nodes.insert(node.unique_id.clone(), node);
        }
        link_warehouse_sources(&mut nodes);
        if let Some(warning) = listed_warning(
            "strata::external",
            &external,
            "materialized 'external' with partition_by: Strata builds them as partitioned Delta tables and writes no file at `location`",
            "other tools read the Delta tables (deltalake, Spark, DuckDB's delta_scan); without partition_by the rows are also written to `location`",
        ) {
            self.errors.push(warning);
        }
        if let Some(warning) = listed_warning(
            "strata::hooks",
            &hooked,
            "configured with hooks Strata does not run (pre_hook, or a post_hook other than `COPY {{ this }} TO 'file'`): the models are built without them",
            "a post_hook `COPY {{ this }} TO 'file' [(FORMAT …, DELIMITER …)]` runs as an export of the model's rows; do in a model what another hook did, or remove it to silence this",
        ) {
            self.errors.push(warning);
        }
        (nodes, ids)
    }

    /// Generic tests declared in property files, attached to their nodes.
    fn generic_tests(
        &mut self,
        nodes: &mut BTreeMap<String, Node>,
        ids: &NodeIds,
        final_inputs: &Arc<RenderInputs>,
    ) {
        let declared = self
            .props
            .models
            .iter()
            .flat_map(model_tests)
            .chain(self.props.seeds.iter().map(|p| {
                (
                    ResourceType::Seed,
                    p.name.clone(),
                    None,
                    p.tests.iter().collect(),
                )
            }))
            .chain(self.props.snapshots.iter().map(|p| {
                (
                    ResourceType::Snapshot,
                    p.name.clone(),
                    None,
                    p.tests.iter().collect(),
                )
            }))
            .chain(self.props.sources.iter().flat_map(|source| {
                source.tables.iter().map(move |table| {
                    (
                        ResourceType::Source,
                        table.name.clone(),
                        Some(source.name.clone()),
                        table.tests.iter().collect(),
                    )
                })
            }));
        let mut generic_tests: Vec<Node> = Vec::new();
        for (resource_type, name, source_name, tests) in declared {
            let attached_id = match &source_name {
                Some(source) => ids.sources.get(&(source.clone(), name.clone())).cloned(),
                None => ids
                    .models
                    .get(&name)
                    .cloned()
                    .filter(|id| id.starts_with(resource_type.as_str())),
            };
            let Some(attached_id) = attached_id else {
                continue;
            };
            let Some(attached) = nodes.get(&attached_id) else {
                continue;
            };
            let package = members(self.project)
                .find(|member| member.name == attached.package_name)
                .unwrap_or(self.project);
            for test in tests.iter() {
                match generic_test(
                    self.project,
                    package,
                    attached,
                    test,
                    &self.renderer,
                    final_inputs,
                    &|dependency: &Dependency| ids.of(dependency),
                ) {
                    Ok(Some(node)) => generic_tests.push(node),
                    Ok(None) => {}
                    Err(diagnostic) => self.errors.push(*diagnostic),
                }
            }
        }
        for test in generic_tests {
            if let Some(existing) = nodes.get(&test.unique_id) {
                self.errors.push(
                    ProjectDiagnostic::error(
                        "strata::duplicate_test",
                        format!("two tests are named '{}'", test.name),
                    )
                    .in_file(&test.original_file_path)
                    .with_hint(format!(
                        "the other is in {}; give one a distinct 'name:'",
                        existing.original_file_path
                    )),
                );
                continue;
            }
            nodes.insert(test.unique_id.clone(), test);
        }
    }

    /// The manifest: the graph (cycles are errors, with the path printed), parent and child
    /// maps, and every diagnostic.
    fn finish(mut self, nodes: BTreeMap<String, Node>) -> Compilation {
        let mut manifest = Manifest {
            metadata: Metadata {
                project_name: self.project.name.clone(),
                project_file: path_string(&self.project.project_file.path),
                strata_version: env!("CARGO_PKG_VERSION").to_string(),
                target_name: self.target_name.to_string(),
            },
            macros: self
                .project
                .macros
                .iter()
                .flat_map(|file| {
                    crate::jinja::macro_names(&file.source.text)
                        .into_iter()
                        .map(move |(name, _)| (name, path_string(&file.source.path)))
                })
                .collect(),
            nodes,
            parent_map: BTreeMap::new(),
            child_map: BTreeMap::new(),
        };
        let dag = manifest.dag();
        if let Some(cycle) = dag.find_cycle() {
            self.errors
                .push(cycle_diagnostic(&cycle, &manifest, self.project));
        }
        for id in dag.nodes() {
            manifest.parent_map.insert(
                id.to_string(),
                dag.parents(id).map(str::to_string).collect(),
            );
            manifest.child_map.insert(
                id.to_string(),
                dag.children(id).map(str::to_string).collect(),
            );
        }

        let mut diagnostics = Diagnostics::default();
        let snapshot_files: Vec<SourceText> = members(self.project)
            .flat_map(|member| member.snapshot_files.iter().cloned())
            .collect();
        for error in self.errors {
            // A snapshot renders from its block alone; its problems show the whole file.
            diagnostics.push(error.with_original_text(&snapshot_files));
        }
        diagnostics.sort();
        let manifest = (!diagnostics.has_errors()).then_some(manifest);
        Compilation {
            manifest,
            diagnostics,
        }
    }
}

/// A source without a location of its own is a table of the warehouse: when the project builds
/// that table (a seed or a model with the source's relation, as dbt projects load sources with
/// seeds), the source depends on it, so that what reads the source runs after it.
fn link_warehouse_sources(nodes: &mut BTreeMap<String, Node>) {
    let builders: BTreeMap<Relation, String> = nodes
        .values()
        .filter(|node| {
            node.resource_type.is_built_from_sql() || node.resource_type == ResourceType::Seed
        })
        .filter_map(|node| Some((node.relation.clone()?, node.unique_id.clone())))
        .collect();
    for node in nodes.values_mut() {
        let in_warehouse = node.resource_type == ResourceType::Source
            && node
                .source
                .as_ref()
                .is_some_and(|info| info.location.is_none());
        if let (true, Some(relation)) = (in_warehouse, &node.relation)
            && let Some(builder) = builders.get(relation)
        {
            node.depends_on = vec![builder.clone()];
        }
    }
}

/// A copy of `layer` with each templated setting rendered and set; a setting that fails to
/// render or to set is reported (at the project file: layers do not keep positions) and left
/// unset.
fn render_templated(
    layer: &ConfigLayer,
    renderer: &Renderer,
    inputs: &Arc<RenderInputs>,
    project_file: &SourceText,
    errors: &mut Vec<ProjectDiagnostic>,
) -> ConfigLayer {
    let mut layer = layer.clone();
    for (key, template) in std::mem::take(&mut layer.templated) {
        let outcome =
            render_json(&template, renderer, inputs).and_then(|value| layer.set(&key, &value));
        if let Err(message) = outcome {
            let shown = template
                .as_str()
                .map_or_else(|| template.to_string(), str::to_string);
            errors.push(
                ProjectDiagnostic::error(
                    "strata::config",
                    format!("setting '{key}: {shown}': {message}"),
                )
                .in_file(&project_file.path),
            );
        }
    }
    layer
}

/// `json` with each string that is a template rendered into its typed value.
fn render_json(
    json: &serde_json::Value,
    renderer: &Renderer,
    inputs: &Arc<RenderInputs>,
) -> Result<serde_json::Value, String> {
    Ok(match json {
        serde_json::Value::String(text) if holds_template(json) => {
            rendered_value(&renderer.render_string(text, inputs)?)
        }
        serde_json::Value::Array(items) => serde_json::Value::Array(
            items
                .iter()
                .map(|item| render_json(item, renderer, inputs))
                .collect::<Result<_, _>>()?,
        ),
        serde_json::Value::Object(fields) => serde_json::Value::Object(
            fields
                .iter()
                .map(|(name, value)| Ok((name.clone(), render_json(value, renderer, inputs)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// Where a source table is and what it is called, rendered.
struct ResolvedSource {
    schema: String,
    identifier: String,
    location: Option<String>,
    format: Option<String>,
}

/// A source table's schema, identifier and location rendered as its package sees them (each
/// may be a template such as `{{ var('x_schema', 'x') }}`), and its file format, checked;
/// problems become diagnostics and the unrendered text stands in.
fn resolve_source(
    renderer: &Renderer,
    inputs: &Arc<RenderInputs>,
    source: &SourceDeclaration,
    table: &SourceTable,
    errors: &mut Vec<ProjectDiagnostic>,
) -> ResolvedSource {
    let pattern = table.location.clone().or_else(|| source.location.clone());
    let render = |text: &str| renderer.render_string_in(text, inputs, &source.package);
    // `schema:` and `identifier:` may be templates (`{{ var('x_schema', 'x') }}`).
    let (schema, identifier) = match (render(&source.schema), render(&table.identifier)) {
        (Ok(schema), Ok(identifier)) => (schema.trim().to_string(), identifier.trim().to_string()),
        (Err(message), _) | (_, Err(message)) => {
            errors.push(table.origin.error(
                "strata::source_relation",
                format!(
                    "cannot render the schema or identifier of '{}.{}': {message}",
                    source.name, table.name
                ),
            ));
            (source.schema.clone(), table.identifier.clone())
        }
    };
    let location = match pattern {
        Some(pattern) => match render(&pattern) {
            Ok(text) => Some(
                text.replace("{name}", &identifier)
                    .replace("{identifier}", &identifier),
            ),
            Err(message) => {
                errors.push(table.origin.error(
                    "strata::source_location",
                    format!(
                        "cannot render the location of '{}.{}': {message}",
                        source.name, table.name
                    ),
                ));
                None
            }
        },
        None => None,
    };
    let (location, inferred) = match location {
        Some(text) => {
            let (path, format) = parse_location(&text);
            (Some(path), format)
        }
        None => (None, None),
    };
    let format = table
        .format
        .clone()
        .or_else(|| source.format.clone())
        .or(inferred)
        .map(|format| normalize_format(&format));
    if let Some(format) = &format {
        if !["parquet", "csv", "json"].contains(&format.as_str()) {
            errors.push(
                table
                    .origin
                    .error(
                        "strata::source_format",
                        format!(
                            "unknown file format '{format}' for source '{}.{}'",
                            source.name, table.name
                        ),
                    )
                    .with_hint("use parquet, csv or json (newline-delimited)"),
            );
        }
    } else if let Some(location) = &location {
        errors.push(
            table
                .origin
                .error(
                    "strata::source_format",
                    format!("cannot tell the file format of '{location}'"),
                )
                .with_hint("end the location with .parquet, .csv or .json, or set meta.format"),
        );
    }
    ResolvedSource {
        schema,
        identifier,
        location,
        format,
    }
}

/// The root project, then each installed package.
fn members(project: &Project) -> impl Iterator<Item = &Project> {
    std::iter::once(project).chain(&project.packages)
}

/// Picks one hierarchical block (`models:`, `seeds:`, …) of a project file.
type FolderBlock = fn(&Project) -> &FolderConfig;

/// The folder layers of a resource of `package` at `path`, outermost first: the package's own
/// block, then (for an installed package) the root project's block for the package, which
/// wins, as in dbt.
fn folder_layers<'p>(
    root: &'p Project,
    package: &'p Project,
    block: FolderBlock,
    path: &[String],
) -> Vec<&'p ConfigLayer> {
    let mut layers = block(package).layers_for(&package.name, path);
    if !std::ptr::eq(root, package) {
        layers.extend(block(root).layers_for(&package.name, path));
    }
    layers
}

/// The vars installed packages declare, global and scoped to the package itself; the first
/// package (by name) to declare a var wins.
fn package_vars(packages: &[Project]) -> serde_json::Map<String, serde_json::Value> {
    let mut vars = serde_json::Map::new();
    for package in packages {
        for (name, value) in &package.vars {
            match value {
                serde_json::Value::Object(scoped) if *name == package.name => {
                    for (name, value) in scoped {
                        vars.entry(name.clone()).or_insert_with(|| value.clone());
                    }
                }
                _ => {
                    vars.entry(name.clone()).or_insert_with(|| value.clone());
                }
            }
        }
    }
    vars
}

fn relation_of(dependency: &Dependency, inputs: &RenderInputs) -> Option<Relation> {
    match dependency {
        Dependency::Ref(name) => inputs.relations.get(name).cloned(),
        Dependency::Source(source, table) => inputs
            .sources
            .get(&(source.clone(), table.clone()))
            .cloned(),
    }
}

/// The tests declared on a model, by the node they attach to: the model, or each of its
/// versions (the model's tests, less those on columns the version excludes, and its own).
fn model_tests(
    properties: &NodeProperties,
) -> Vec<(ResourceType, String, Option<String>, Vec<&TestDeclaration>)> {
    if properties.versions.is_empty() {
        return vec![(
            ResourceType::Model,
            properties.name.clone(),
            None,
            properties.tests.iter().collect(),
        )];
    }
    properties
        .versions
        .iter()
        .map(|version| {
            let inherited = properties.tests.iter().filter(|test| {
                test.column.as_ref().is_none_or(|column| {
                    !version
                        .excluded_columns
                        .iter()
                        .any(|excluded| excluded.eq_ignore_ascii_case(column))
                })
            });
            (
                ResourceType::Model,
                version.node_name(&properties.name),
                None,
                inherited.chain(&version.tests).collect(),
            )
        })
        .collect()
}

/// Orders versions numerically where both are numbers (`2` < `10`), as text otherwise.
fn version_order(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x.total_cmp(&y),
        _ => a.cmp(b),
    }
}

/// What is wrong with a snapshot's settings, at its `config()` call (else its first SQL).
fn snapshot_problem(file: &SqlFile, config: &NodeConfig) -> Option<ProjectDiagnostic> {
    let message = SnapshotSpec::from_config(config).err()?;
    let source = &file.source;
    let text = &source.text;
    let start = text
        .find("config(")
        .or_else(|| text.find(|c: char| !c.is_whitespace()))
        .unwrap_or_default();
    let end = text[start..]
        .find('\n')
        .map_or(text.len(), |newline| start + newline);
    Some(
        ProjectDiagnostic::error("strata::snapshot", message)
            .at_range(source, start, end)
            .with_hint(format!(
                "configure the snapshot '{}' in its config() block, its properties or the snapshots: block of the project file",
                file.name
            )),
    )
}

/// The materialization of a kind of SQL node before its settings say otherwise.
fn default_materialization(resource_type: ResourceType) -> Materialization {
    match resource_type {
        ResourceType::Test => Materialization::Test,
        ResourceType::Snapshot => Materialization::Snapshot,
        _ => Materialization::View,
    }
}

/// The relation of a model or snapshot: schema from config (a snapshot's older
/// `target_schema` too), else a model's layer, else the default schema; ephemeral models
/// become a CTE name.
fn node_relation(draft: &Draft<'_>, renderer: &Renderer, naming: &Naming) -> Relation {
    let (file, resource_type, config) = (draft.file, draft.resource_type, &draft.config);
    if config.materialized == Materialization::Ephemeral {
        return Relation::new("", format!("{EPHEMERAL_PREFIX}{}", draft.name));
    }
    let target_schema = || {
        config
            .extra
            .get("target_schema")
            .and_then(|value| value.as_str())
            .map(str::to_string)
    };
    let schema = config
        .schema
        .clone()
        .or_else(|| {
            if resource_type == ResourceType::Snapshot {
                target_schema()
            } else {
                file.layer().map(str::to_string)
            }
        })
        .unwrap_or_else(|| DEFAULT_SCHEMA.to_string());
    let relation = Relation::new(
        schema,
        config.alias.clone().unwrap_or_else(|| draft.name.clone()),
    );
    if resource_type == ResourceType::Snapshot && target_schema().is_some() {
        return relation; // dbt names a snapshot with `target_schema` without the macro
    }
    let node = NamedNode {
        file: &file.source.path,
        unique_id: &draft.unique_id,
        name: &draft.name,
        resource_type,
        package: &draft.package.name,
        original_file_path: path_string(in_package(draft.package, &file.source.path)),
        folders: &file.folders,
        file_name: file_name(&file.source.path),
        config,
    };
    naming.relation(renderer, &node, relation)
}

/// Where `strata compile` writes a node's SQL: under the package's name, the file's path in
/// its package, or for snapshots (several may share a file) the file's folder and the
/// snapshot's name.
fn compiled_path(
    package: &Project,
    resource_type: ResourceType,
    path: &std::path::Path,
    name: &str,
) -> String {
    let project = &package.name;
    let path = in_package(package, path);
    if resource_type == ResourceType::Snapshot {
        let folder = path.parent().map(path_string).unwrap_or_default();
        return format!("compiled/{project}/{folder}/{name}.sql");
    }
    format!("compiled/{project}/{}", path_string(path))
}

/// A path relative to the root project, as relative to the package it belongs to.
fn in_package<'p>(package: &Project, path: &'p std::path::Path) -> &'p std::path::Path {
    path.strip_prefix(&package.folder).unwrap_or(path)
}

/// One warning for every node of `drafts` (`code`; "N node(s) are {what} (a, b, … and k
/// more)"), at the first one's file; none when `drafts` is empty.
fn listed_warning(
    code: &'static str,
    drafts: &[&Draft<'_>],
    what: &str,
    hint: &str,
) -> Option<ProjectDiagnostic> {
    let first = drafts.first()?;
    let names: Vec<&str> = drafts.iter().map(|draft| draft.name.as_str()).collect();
    let mut listed = names[..names.len().min(5)].join(", ");
    if names.len() > 5 {
        listed.push_str(&format!(" and {} more", names.len() - 5));
    }
    Some(
        ProjectDiagnostic::warning(
            code,
            format!("{} node(s) are {what} ({listed})", names.len()),
        )
        .in_file(&first.file.source.path)
        .with_hint(hint),
    )
}

/// What a hook's `{{ this }}` is replaced by before a hook is read as a `COPY` of the model.
const THIS_IN_HOOKS: &str = "__strata_this__";

/// A hook's `{{ this }}` (any spacing, whitespace control).
static HOOK_THIS: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(r"\{\{-?\s*this\s*-?\}\}").expect("a valid pattern")
});

impl Compiler<'_> {
    /// The exports a model's post_hooks ask for (`COPY {{ this }} TO 'file' …`, see
    /// [`ExportSpec::from_copy`]) and whether it has hooks Strata does not run (any pre_hook,
    /// any other post_hook, any hook of a model that cannot be exported).
    fn hook_exports(
        &self,
        draft: &Draft<'_>,
        inputs: &std::cell::OnceCell<Arc<RenderInputs>>,
        exportable: bool,
    ) -> (Vec<ExportSpec>, bool) {
        let mut not_run = !draft.config.pre_hook.is_empty();
        let mut exports = Vec::new();
        if draft.config.post_hook.is_empty() {
            return (exports, not_run);
        }
        for hook in &draft.config.post_hook {
            let hook = HOOK_THIS.replace_all(hook, THIS_IN_HOOKS);
            let inputs = inputs.get_or_init(|| Arc::new(self.inputs.clone()));
            let copy = self
                .renderer
                .render_string_in(&hook, inputs, &draft.package.name)
                .ok()
                .and_then(|rendered| ExportSpec::from_copy(&rendered, THIS_IN_HOOKS));
            match copy {
                Some(spec) if exportable => exports.push(spec),
                _ => not_run = true,
            }
        }
        (exports, not_run)
    }
}

/// A node's fully qualified name: its package, its file's folders, its name.
fn fqn(package: &str, folders: &[String], name: &str) -> Vec<String> {
    std::iter::once(package)
        .chain(folders.iter().map(String::as_str))
        .chain(std::iter::once(name))
        .map(str::to_string)
        .collect()
}

/// The last part of `path`, as text.
fn file_name(path: &std::path::Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn path_with_stem(folders: &[String], stem: &str) -> Vec<String> {
    let mut path = folders.to_vec();
    path.push(stem.to_string());
    path
}

fn index_properties<'a>(
    list: &'a [NodeProperties],
    what: &str,
    errors: &mut Vec<ProjectDiagnostic>,
) -> BTreeMap<&'a str, &'a NodeProperties> {
    let mut index: BTreeMap<&str, &NodeProperties> = BTreeMap::new();
    for properties in list {
        if let Some(first) = index.get(properties.name.as_str()) {
            errors.push(
                properties
                    .origin
                    .error(
                        "strata::duplicate_properties",
                        format!("{what} '{}' is described twice", properties.name),
                    )
                    .with_hint(format!(
                        "the other description is at {}:{}; merge them",
                        first.origin.source.path.display(),
                        first.origin.line
                    )),
            );
            continue;
        }
        index.insert(&properties.name, properties);
    }
    index
}

fn merge_column_docs(columns: &mut Vec<Column>, declared: &[ColumnDeclaration]) {
    for declaration in declared {
        match columns
            .iter_mut()
            .find(|column| column.name.eq_ignore_ascii_case(&declaration.name))
        {
            Some(column) => {
                column.description.clone_from(&declaration.description);
                if declaration.data_type.is_some() {
                    column.data_type.clone_from(&declaration.data_type);
                }
            }
            None => columns.push(Column {
                name: declaration.name.clone(),
                description: declaration.description.clone(),
                data_type: declaration.data_type.clone(),
            }),
        }
    }
}

fn closest_hint<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
    fallback: &str,
) -> String {
    match closest(name, candidates) {
        Some(best) => format!("did you mean '{best}'?"),
        None => format!("create {fallback} or remove this entry"),
    }
}

/// Splits dbt-duckdb's `read_parquet('path')`-style locations into the path and a format.
fn parse_location(text: &str) -> (String, Option<String>) {
    let trimmed = text.trim();
    for (function, format) in [
        ("read_parquet", "parquet"),
        ("parquet_scan", "parquet"),
        ("read_csv_auto", "csv"),
        ("read_csv", "csv"),
        ("read_json_auto", "json"),
        ("read_ndjson_auto", "json"),
        ("read_ndjson", "json"),
        ("read_json", "json"),
    ] {
        if let Some(rest) = trimmed
            .strip_prefix(function)
            .and_then(|rest| rest.trim_start().strip_prefix('('))
        {
            let quote = rest.trim_start().chars().next();
            if let Some(quote @ ('\'' | '"')) = quote {
                let inner = &rest.trim_start()[1..];
                if let Some(end) = inner.find(quote) {
                    return (inner[..end].to_string(), Some(format.to_string()));
                }
            }
        }
    }
    let lower = trimmed.to_ascii_lowercase();
    let without_compression = lower.trim_end_matches(".gz").trim_end_matches(".zst");
    let format = [
        (".parquet", "parquet"),
        (".csv", "csv"),
        (".tsv", "csv"),
        (".json", "json"),
        (".ndjson", "json"),
        (".jsonl", "json"),
    ]
    .iter()
    .find(|(extension, _)| without_compression.ends_with(extension))
    .map(|(_, format)| (*format).to_string());
    (trimmed.to_string(), format)
}

fn normalize_format(format: &str) -> String {
    match format.to_ascii_lowercase().as_str() {
        "ndjson" | "jsonl" | "json" | "newline_delimited_json" => String::from("json"),
        "csv" | "tsv" => String::from("csv"),
        other => other.to_string(),
    }
}

/// Removes trailing whitespace and semicolons so that the SQL can be wrapped in other queries.
fn tidy_sql(sql: &str) -> String {
    let mut text = sql.trim_end();
    while let Some(stripped) = text.strip_suffix(';') {
        text = stripped.trim_end();
    }
    let mut out = text.trim_start_matches('\n').to_string();
    out.push('\n');
    out
}

fn check_unique_relations(
    drafts: &[Draft],
    seeds: &[Node],
    inputs: &RenderInputs,
    errors: &mut Vec<ProjectDiagnostic>,
) {
    let mut owners: BTreeMap<&Relation, &str> = BTreeMap::new();
    for seed in seeds {
        if let Some(relation) = &seed.relation {
            owners.insert(relation, &seed.name);
        }
    }
    for draft in drafts {
        if !draft.resource_type.is_built_from_sql()
            || !draft.config.enabled
            || draft.config.materialized == Materialization::Ephemeral
        {
            continue;
        }
        let Some(relation) = inputs.relations.get(&draft.name) else {
            continue;
        };
        if let Some(other) = owners.get(relation) {
            errors.push(
                ProjectDiagnostic::error(
                    "strata::duplicate_relation",
                    format!("'{}' and '{other}' both write {relation}", draft.name),
                )
                .in_file(&draft.file.source.path)
                .with_hint("give one of them a different schema or alias"),
            );
        } else {
            owners.insert(relation, &draft.name);
        }
    }
}

/// Finds `'name'` or `"name"` inside a `ref(` call in a file, for locating an error.
fn locate(source: &SourceText, name: &str) -> Option<(usize, usize)> {
    for quote in ['\'', '"'] {
        let needle = format!("{quote}{name}{quote}");
        let mut from = 0;
        while let Some(found) = source.text[from..].find(&needle) {
            let at = from + found;
            let before = source.text[..at].trim_end();
            if before.ends_with('(') || before.ends_with(',') {
                return Some((at, at + needle.len()));
            }
            from = at + needle.len();
        }
    }
    None
}

fn cycle_diagnostic(cycle: &[String], manifest: &Manifest, project: &Project) -> ProjectDiagnostic {
    let names: Vec<String> = cycle
        .iter()
        .map(|id| {
            manifest
                .nodes
                .get(id)
                .map_or_else(|| id.clone(), |node| node.name.clone())
        })
        .collect();
    let message = format!("dependency cycle: {}", names.join(" -> "));
    let hint = "each arrow points from a model to one that reads it, so the first model ends up reading itself; remove one of these refs";
    // Point at the reference that closes the first edge: the second node's ref to the first.
    let reader = cycle.get(1).and_then(|id| manifest.nodes.get(id));
    let file = reader.and_then(|node| {
        project
            .models
            .iter()
            .chain(&project.singular_tests)
            .find(|file| path_string(&file.source.path) == node.original_file_path)
    });
    match file {
        Some(file) => match locate(&file.source, &names[0]) {
            Some((start, end)) => ProjectDiagnostic::error("strata::cycle", message)
                .at_range(&file.source, start, end)
                .with_hint(hint),
            None => ProjectDiagnostic::error("strata::cycle", message)
                .in_file(&file.source.path)
                .with_hint(hint),
        },
        None => ProjectDiagnostic::error("strata::cycle", message).with_hint(hint),
    }
}

/// Inlines ephemeral models as CTEs into every model and test that reads them.
fn inline_ephemeral_models(nodes: &mut BTreeMap<String, Node>) {
    let ephemeral: BTreeMap<String, (String, Vec<String>)> = nodes
        .values()
        .filter(|node| {
            node.resource_type == ResourceType::Model
                && node.config.materialized == Materialization::Ephemeral
        })
        .filter_map(|node| {
            node.compiled_code
                .clone()
                .map(|sql| (node.unique_id.clone(), (sql, node.depends_on.clone())))
        })
        .collect();
    // A node that inlines a provisional ephemeral model is provisional too.
    let deferred: BTreeMap<String, String> = nodes
        .values()
        .filter(|node| ephemeral.contains_key(&node.unique_id))
        .filter_map(|node| Some((node.unique_id.clone(), node.deferred_compile.clone()?)))
        .collect();
    if ephemeral.is_empty() {
        return;
    }
    for node in nodes.values_mut() {
        if node.config.materialized == Materialization::Ephemeral {
            continue;
        }
        // Every ephemeral model reachable through ephemeral models, parents first.
        let mut ordered: Vec<String> = Vec::new();
        let mut visiting: BTreeSet<String> = BTreeSet::new();
        fn visit(
            id: &str,
            ephemeral: &BTreeMap<String, (String, Vec<String>)>,
            ordered: &mut Vec<String>,
            visiting: &mut BTreeSet<String>,
        ) {
            if ordered.iter().any(|done| done == id) || !visiting.insert(id.to_string()) {
                return;
            }
            if let Some((_, parents)) = ephemeral.get(id) {
                for parent in parents {
                    if ephemeral.contains_key(parent) {
                        visit(parent, ephemeral, ordered, visiting);
                    }
                }
                ordered.push(id.to_string());
            }
        }
        for parent in &node.depends_on {
            if ephemeral.contains_key(parent) {
                visit(parent, &ephemeral, &mut ordered, &mut visiting);
            }
        }
        if ordered.is_empty() {
            continue;
        }
        let ctes: Vec<String> = ordered
            .iter()
            .filter_map(|id| {
                let (sql, _) = ephemeral.get(id)?;
                let name = id.rsplit('.').next()?;
                Some(format!(
                    "{EPHEMERAL_PREFIX}{name} as (\n{}\n)",
                    sql.trim_end()
                ))
            })
            .collect();
        if let Some(sql) = &node.compiled_code {
            node.compiled_code = Some(inject_ctes(sql, &ctes.join(",\n")));
        }
        if node.deferred_compile.is_none() {
            node.deferred_compile = ordered.iter().find_map(|id| deferred.get(id).cloned());
        }
    }
}

/// Puts CTEs in front of a query, merging them into its own `with` clause when it has one.
fn inject_ctes(sql: &str, ctes: &str) -> String {
    let body_start = skip_leading_comments(sql);
    let body = &sql[body_start..];
    let starts_with_with = body.len() >= 4
        && body[..4].eq_ignore_ascii_case("with")
        && body[4..].chars().next().is_some_and(char::is_whitespace);
    if starts_with_with {
        let rest = &body[4..];
        let recursive = rest
            .trim_start()
            .get(..9)
            .is_some_and(|word| word.eq_ignore_ascii_case("recursive"));
        if !recursive {
            return format!("{}with {ctes},\n{}", &sql[..body_start], rest.trim_start());
        }
    }
    format!("{}with {ctes}\n{body}", &sql[..body_start])
}

fn skip_leading_comments(sql: &str) -> usize {
    let mut at = 0;
    loop {
        let rest = &sql[at..];
        let trimmed = rest.trim_start();
        at += rest.len() - trimmed.len();
        if trimmed.starts_with("--") {
            at += trimmed.find('\n').map_or(trimmed.len(), |end| end + 1);
        } else if trimmed.starts_with("/*") {
            at += trimmed.find("*/").map_or(trimmed.len(), |end| end + 2);
        } else {
            return at;
        }
    }
}

/// Builds the node of one generic test declared in a property file. `Ok(None)` for a disabled
/// test.
fn generic_test(
    root: &Project,
    project: &Project,
    attached: &Node,
    test: &TestDeclaration,
    renderer: &Renderer,
    inputs: &Arc<RenderInputs>,
    dependency_id: &dyn Fn(&Dependency) -> Option<String>,
) -> Result<Option<Node>, Box<ProjectDiagnostic>> {
    let origin = &test.origin;
    let path_in_package = in_package(project, &origin.source.path);
    let folders: Vec<String> = path_in_package
        .parent()
        .map(|parent| {
            parent
                .components()
                .skip(1)
                .map(|part| part.as_os_str().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let config = test_config(root, project, test, &folders, renderer, inputs)?;
    if !config.enabled {
        return Ok(None);
    }
    let column = test.column.clone();
    check_testable(origin, attached, column.as_deref())?;
    let relation = attached.relation_name.clone().unwrap_or_default();
    let where_clause = config.where_clause.as_deref();
    let mut depends_on = vec![attached.unique_id.clone()];
    let sql_of = TestSql {
        test,
        attached,
        relation: relation.clone(),
        column: column.clone(),
        where_clause,
        renderer,
        inputs,
        dependency_id,
    };
    let sql = match test.test_name.as_str() {
        "not_null" => {
            data_tests::not_null(&relation, &sql_of.needs_column("not_null")?, where_clause)
        }
        "unique" => data_tests::unique(&relation, &sql_of.needs_column("unique")?, where_clause),
        "accepted_values" => sql_of.accepted_values()?,
        "relationships" => sql_of.relationships(&mut depends_on)?,
        other if renderer.has_generic_test(other, &project.name) => {
            sql_of.project_test(other, &mut depends_on)?
        }
        other => return Err(unknown_test(origin, other)),
    };
    let name = test
        .custom_name
        .clone()
        .unwrap_or_else(|| generic_test_name(test, attached, column.as_deref()));
    depends_on.sort();
    depends_on.dedup();
    let file = path_string(&origin.source.path);
    let mut arguments = test.arguments.clone();
    if let Some(column) = &column {
        arguments.insert(
            String::from("column_name"),
            serde_json::Value::String(column.clone()),
        );
    }
    let mut fqn = vec![project.name.clone()];
    fqn.extend(folders);
    fqn.push(name.clone());
    Ok(Some(Node {
        unique_id: format!("test.{}.{name}", project.name),
        resource_type: ResourceType::Test,
        package_name: project.name.clone(),
        compiled_path: Some(format!(
            "compiled/{}/{}/{name}.sql",
            project.name,
            path_string(path_in_package)
        )),
        original_file_path: file,
        layer: None,
        fqn,
        relation: None,
        relation_name: None,
        config,
        description: String::new(),
        columns: Vec::new(),
        depends_on,
        raw_code: String::new(),
        checksum: checksum(&sql),
        compiled_code: Some(sql),
        test: Some(TestInfo {
            test_name: test.test_name.clone(),
            arguments,
            attached_node: Some(attached.unique_id.clone()),
            column_name: column,
        }),
        source: None,
        snapshot: None,
        deferred_compile: None,
        exports: Vec::new(),
        name,
    }))
}

/// What the SQL of one generic test is made from.
struct TestSql<'a> {
    test: &'a TestDeclaration,
    attached: &'a Node,
    relation: String,
    column: Option<String>,
    where_clause: Option<&'a str>,
    renderer: &'a Renderer,
    inputs: &'a Arc<RenderInputs>,
    dependency_id: &'a dyn Fn(&Dependency) -> Option<String>,
}

/// A test's SQL and the suffix of its generated name.
type TestSqlResult = Result<String, Box<ProjectDiagnostic>>;

impl TestSql<'_> {
    /// The column a column test checks.
    fn needs_column(&self, name: &str) -> Result<String, Box<ProjectDiagnostic>> {
        self.column.clone().ok_or_else(|| {
            Box::new(self.test.origin.error(
                "strata::test_declaration",
                format!("'{name}' checks a column; declare it under a column or pass column_name"),
            ))
        })
    }

    /// The text argument `name` of the test, or a located error saying `missing`.
    fn needs_text_argument(
        &self,
        name: &str,
        missing: &str,
    ) -> Result<&str, Box<ProjectDiagnostic>> {
        self.test
            .arguments
            .get(name)
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| Box::new(self.test.origin.error("strata::test_declaration", missing)))
    }

    /// `accepted_values`: the column holds only the listed values.
    fn accepted_values(&self) -> TestSqlResult {
        let column = self.needs_column("accepted_values")?;
        let quote = self
            .test
            .arguments
            .get("quote")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(true);
        let values = self.test.arguments.get("values");
        data_tests::accepted_values(&self.relation, &column, values, quote, self.where_clause)
            .map_err(|message| {
                Box::new(
                    self.test
                        .origin
                        .error("strata::test_declaration", message)
                        .with_hint("write values: [a, b, c]"),
                )
            })
    }

    /// `relationships`: every value of the column is in the parent's field.
    fn relationships(&self, depends_on: &mut Vec<String>) -> TestSqlResult {
        let column = self.needs_column("relationships")?;
        let to = self.needs_text_argument(
            "to",
            "relationships needs 'to:', such as to: ref('customers')",
        )?;
        let field = self.needs_text_argument(
            "field",
            "relationships needs 'field:', the column of the parent it matches",
        )?;
        let expression = if to.contains("{{") {
            to.to_string()
        } else {
            format!("{{{{ {to} }}}}")
        };
        let rendered = self
            .renderer
            .render_expression(&expression, self.inputs)
            .map_err(|message| {
                self.test.origin.error(
                    "strata::unknown_ref",
                    format!("in relationships 'to': {message}"),
                )
            })?;
        for dependency in &rendered.captured.dependencies {
            if let Some(id) = (self.dependency_id)(dependency) {
                depends_on.push(id);
            }
        }
        Ok(data_tests::relationships(
            &self.relation,
            &column,
            rendered.sql.trim(),
            field,
            self.where_clause,
        ))
    }

    /// A generic test the project defines with `{% test %}`.
    fn project_test(&self, other: &str, depends_on: &mut Vec<String>) -> TestSqlResult {
        let Some(relation) = self.attached.relation.as_ref() else {
            return Err(Box::new(self.test.origin.error(
                "strata::test_declaration",
                format!("'{}' has no table to test", self.attached.name),
            )));
        };
        let rendered = self
            .renderer
            .render_generic_test(
                other,
                &self.attached.package_name,
                relation,
                self.column.as_deref(),
                &self.test.arguments,
                self.inputs,
            )
            .map_err(|message| {
                Box::new(self.test.origin.error(
                    "strata::jinja",
                    format!("in generic test '{other}': {message}"),
                ))
            })?;
        for dependency in &rendered.captured.dependencies {
            if let Some(id) = (self.dependency_id)(dependency) {
                depends_on.push(id);
            }
        }
        Ok(tidy_sql(&rendered.sql))
    }
}

/// The configuration of a generic test: the tests blocks of its package's and the project's
/// files, then its own `config:`, with templated settings rendered.
fn test_config(
    root: &Project,
    project: &Project,
    test: &TestDeclaration,
    folders: &[String],
    renderer: &Renderer,
    inputs: &Arc<RenderInputs>,
) -> Result<NodeConfig, Box<ProjectDiagnostic>> {
    let mut errors = Vec::new();
    let layers: Vec<ConfigLayer> =
        folder_layers(root, project, |project| &project.tests_config, folders)
            .into_iter()
            .chain([&test.config])
            .map(|layer| {
                render_templated(layer, renderer, inputs, &project.project_file, &mut errors)
            })
            .collect();
    if let Some(error) = errors.into_iter().next() {
        return Err(Box::new(error));
    }
    let mut config = NodeConfig::resolve(Materialization::Test, &layers);
    config.materialized = Materialization::Test;
    Ok(config)
}

/// A test needs a table to query, and a test of a seed's column a column the seed has.
fn check_testable(
    origin: &crate::properties::Origin,
    attached: &Node,
    column: Option<&str>,
) -> Result<(), Box<ProjectDiagnostic>> {
    if attached.config.materialized == Materialization::Ephemeral {
        return Err(Box::new(
            origin
                .error(
                    "strata::test_on_ephemeral",
                    format!(
                        "'{}' is ephemeral, so it has no table to test",
                        attached.name
                    ),
                )
                .with_hint("materialize it as a view or a table to test it"),
        ));
    }
    if attached.resource_type == ResourceType::Seed
        && let Some(column) = column
        && !attached
            .columns
            .iter()
            .any(|known| known.name.eq_ignore_ascii_case(column))
    {
        return Err(Box::new(
            origin
                .error(
                    "strata::unknown_column",
                    format!("seed '{}' has no column '{column}'", attached.name),
                )
                .with_hint(format!(
                    "its columns are: {}",
                    attached
                        .columns
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
        ));
    }
    Ok(())
}

/// The error for a generic test nobody defines, with the closest known one.
fn unknown_test(origin: &crate::properties::Origin, other: &str) -> Box<ProjectDiagnostic> {
    let known: Vec<&str> = BUILT_IN_TESTS.to_vec();
    let hint = match closest(other, known.iter().copied()) {
        Some(best) => format!("did you mean '{best}'?"),
        None if other.contains('.') => format!(
            "'{}' names a package: declare it in packages.yml and run `strata deps`, or check the test's name",
            other.split('.').next().unwrap_or_default()
        ),
        None => format!(
            "Strata knows {}; define '{other}' with {{% test {other}(model, column_name) %}} in macros/ or tests/generic/",
            BUILT_IN_TESTS.join(", ")
        ),
    };
    Box::new(
        origin
            .error(
                "strata::unknown_test",
                format!("unknown generic test '{other}'"),
            )
            .with_hint(hint),
    )
}

/// Makes a test name out of its parts: lowercase letters, digits and underscores, at most 64
/// characters (longer names keep a prefix and a hash of the whole, as dbt does).
/// The name dbt gives `test` on `attached` (and `column`); a source's tests are named
/// `source_<test>_<source>_<table>_…`.
fn generic_test_name(test: &TestDeclaration, attached: &Node, column: Option<&str>) -> String {
    let (test_type, attached_name) = match &attached.source {
        Some(info) => (
            format!("source_{}", test.test_name),
            format!("{}_{}", info.source_name, attached.name),
        ),
        None => (test.test_name.clone(), attached.name.clone()),
    };
    dbt_test_name(&test_type, &attached_name, column, &test.arguments)
}

/// A generic test's name exactly as dbt makes it: `<package>_<test>_<model>_<arguments>`, the
/// arguments (with `column_name`, without `model`) sorted by name, a mapping's values and a
/// list's items each one part, every run of characters other than letters, digits and `_`
/// replaced by `_`, the parts joined by `__`.
fn dbt_test_name(
    test: &str,
    attached: &str,
    column: Option<&str>,
    arguments: &serde_json::Map<String, serde_json::Value>,
) -> String {
    let mut sorted: BTreeMap<&str, serde_json::Value> = arguments
        .iter()
        .filter(|(key, _)| key.as_str() != "model")
        .map(|(key, value)| (key.as_str(), value.clone()))
        .collect();
    if let Some(column) = column {
        sorted.insert("column_name", serde_json::Value::from(column));
    }
    let parts: Vec<String> = sorted
        .values()
        .flat_map(|value| match value {
            serde_json::Value::Object(map) => map.values().cloned().collect(),
            serde_json::Value::Array(items) => items.clone(),
            other => vec![other.clone()],
        })
        .map(|part| clean_name_part(&python_str(&part)))
        .collect();
    format!("{}_{attached}_{}", test.replace('.', "_"), parts.join("__"))
}

/// A value as Python's `str()` writes it (dbt builds test names from those).
fn python_str(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Bool(true) => String::from("True"),
        serde_json::Value::Bool(false) => String::from("False"),
        serde_json::Value::Null => String::from("None"),
        other => other.to_string(),
    }
}

/// `re.sub("[^0-9a-zA-Z_]+", "_", part)`.
fn clean_name_part(part: &str) -> String {
    let mut cleaned = String::with_capacity(part.len());
    let mut in_run = false;
    for c in part.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            cleaned.push(c);
            in_run = false;
        } else if !in_run {
            cleaned.push('_');
            in_run = true;
        }
    }
    cleaned
}

/// Compiles a project made of `files` (path, text) in a temporary folder.
#[cfg(test)]
fn compile_files(files: &[(&str, &str)]) -> Compilation {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let full = dir.path().join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, text).unwrap();
    }
    let loaded = Project::load(dir.path());
    assert!(!loaded.diagnostics.has_errors(), "{}", loaded.diagnostics);
    compile(&loaded.project.unwrap(), &CompileOptions::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_external_format_strata_cannot_write_fails_compile_naming_the_model() {
        let compilation = compile_files(&[
            ("dbt_project.yml", "name: shop\n"),
            (
                "models/sheet.sql",
                "{{ config(materialized='external', format='xlsx') }} select 1 as id",
            ),
            (
                "models/export.sql",
                "{{ config(materialized='external', location='out/e.csv') }} select 1 as id",
            ),
        ]);
        let text = compilation.diagnostics.to_string();
        assert!(compilation.manifest.is_none(), "{text}");
        assert!(
            text.contains("model 'sheet': external format 'xlsx'") && !text.contains("'export'"),
            "{text}"
        );
    }

    #[test]
    fn hooks_and_partitioned_external_models_get_one_warning_each_naming_them() {
        let mut files = vec![(
            "dbt_project.yml",
            "name: shop\nmodels:\n  shop:\n    exports:\n      +materialized: external\n      +partition_by: [id]\n",
        )];
        let texts: Vec<(String, String)> = (0..7)
            .map(|n| {
                (
                    format!("models/exports/e{n}.sql"),
                    format!("select {n} as id"),
                )
            })
            .collect();
        files.extend(
            texts
                .iter()
                .map(|(path, text)| (path.as_str(), text.as_str())),
        );
        files.push((
            "models/audited.sql",
            "{{ config(post_hook=\"set threads = 1\") }} select 1 as id",
        ));
        // A copy of the model to a file runs (as an export): not listed.
        files.push((
            "models/copied.sql",
            "{{ config(post_hook=\"copy {{ this }} to '{{ var('out', 'x') }}.csv' (delimiter '|')\") }} select 1 as id",
        ));
        let compilation = compile_files(&files);
        let text = compilation.diagnostics.to_string();
        assert!(compilation.manifest.is_some(), "{text}");
        assert!(
            text.contains("7 node(s) are materialized 'external' with partition_by")
                && text.contains("e0, e1, e2, e3, e4 and 2 more"),
            "{text}"
        );
        assert!(
            text.contains("1 node(s) are configured with hooks Strata does not run")
                && text.contains("(audited)"),
            "{text}"
        );
        let manifest = compilation.manifest.unwrap();
        let copied = &manifest.nodes["model.shop.copied"];
        assert_eq!(copied.exports.len(), 1);
        assert_eq!(copied.exports[0].location, "x.csv");
        assert_eq!(copied.exports[0].delimiter, Some(b'|'));
    }

    #[test]
    fn ctes_merge_into_an_existing_with() {
        let ctes = "__strata_cte__e as (\nselect 1\n)";
        assert_eq!(
            inject_ctes("select * from e", ctes),
            "with __strata_cte__e as (\nselect 1\n)\nselect * from e"
        );
        assert_eq!(
            inject_ctes("-- note\nWITH a as (select 1) select * from a", ctes),
            "-- note\nwith __strata_cte__e as (\nselect 1\n),\na as (select 1) select * from a"
        );
    }

    #[test]
    fn locations_in_dbt_duckdb_style() {
        assert_eq!(
            parse_location("read_parquet('s3://b/x/*.parquet')"),
            (
                String::from("s3://b/x/*.parquet"),
                Some(String::from("parquet"))
            )
        );
        assert_eq!(
            parse_location("data/users.csv"),
            (String::from("data/users.csv"), Some(String::from("csv")))
        );
        assert_eq!(parse_location("data/events/").1, None);
    }

    #[test]
    fn generic_test_names_are_dbts() {
        let arguments = |json: serde_json::Value| json.as_object().unwrap().clone();
        assert_eq!(
            dbt_test_name(
                "relationships",
                "orders",
                Some("customer_id"),
                &arguments(serde_json::json!({"to": "ref('customers')", "field": "id"}))
            ),
            "relationships_orders_customer_id__id__ref_customers_"
        );
        assert_eq!(
            dbt_test_name(
                "accepted_values",
                "source_raw_orders",
                Some("status"),
                &arguments(serde_json::json!({"values": ["a b", true], "quote": false}))
            ),
            "accepted_values_source_raw_orders_status__False__a_b__True"
        );
        assert_eq!(
            dbt_test_name(
                "dbt_utils.expression_is_true",
                "orders",
                None,
                &arguments(serde_json::json!({"expression": "total >= 0"}))
            ),
            "dbt_utils_expression_is_true_orders_total_0"
        );
        assert_eq!(
            dbt_test_name("not_null", "orders", Some("id"), &serde_json::Map::new()),
            "not_null_orders_id"
        );
    }

    #[test]
    fn tidy_sql_drops_trailing_semicolons() {
        assert_eq!(tidy_sql("\nselect 1 ;\n\n"), "select 1\n");
    }
}

#[cfg(test)]
mod package_tests;

mod naming;
use naming::{NamedNode, Naming};
