//! Loading a project folder: `dbt_project.yml` (or `strata_project.yml`), models, seeds,
//! macros, singular tests and property files.
//!
//! Loading only reads and parses files; it never fails on the first problem. Every problem is
//! collected as a diagnostic so that one `strata compile` reports all of them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::{ConfigLayer, read_config_mapping};
use crate::diagnostics::{Diagnostics, ProjectDiagnostic, Severity, SourceText};
use crate::yaml::{Yaml, YamlValue};

/// Project file names, in the order they are looked for.
pub const PROJECT_FILES: [&str; 2] = ["strata_project.yml", "dbt_project.yml"];

/// Keys of the project file that Strata accepts and ignores (its target is the warehouse).
const IGNORED_PROJECT_KEYS: [&str; 14] = [
    "profile",
    "version",
    "config-version",
    "require-dbt-version",
    "target-path",
    "clean-targets",
    "log-path",
    "analysis-paths",
    "docs-paths",
    "asset-paths",
    "quoting",
    "on-run-start",
    "on-run-end",
    "flags",
];

/// A folder of the hierarchical `models:` / `seeds:` / `data_tests:` blocks.
#[derive(Debug, Clone, Default)]
pub struct FolderConfig {
    /// Settings given at this level.
    pub layer: ConfigLayer,
    /// Position of this folder's key in the project file (0 for the root).
    pub line: u32,
    /// Column of this folder's key.
    pub column: u32,
    /// Sub-folders (or, at the last level, file names), by name.
    pub children: BTreeMap<String, FolderConfig>,
}

impl FolderConfig {
    /// Returns the layers that apply to a file at `path` (folders from the resource root, then
    /// the file's stem), outermost first.
    pub fn layers_for<'a>(&'a self, project: &str, path: &[String]) -> Vec<&'a ConfigLayer> {
        let mut layers = vec![&self.layer];
        // The first level names the project (or a package); the project's own block applies.
        let Some(mut node) = self.children.get(project) else {
            return layers;
        };
        layers.push(&node.layer);
        for part in path {
            match node.children.get(part) {
                Some(child) => {
                    layers.push(&child.layer);
                    node = child;
                }
                None => break,
            }
        }
        layers
    }

    /// Returns the folder paths (under the project's own block) that match no resource, with
    /// their positions, given the paths (folders then file stem) of every resource.
    pub fn unused_paths(
        &self,
        project: &str,
        resources: &[Vec<String>],
    ) -> Vec<(String, u32, u32)> {
        let mut unused = Vec::new();
        let Some(root) = self.children.get(project) else {
            return unused;
        };
        let mut pending: Vec<(Vec<String>, &FolderConfig)> = root
            .children
            .iter()
            .map(|(name, child)| (vec![name.clone()], child))
            .collect();
        while let Some((path, folder)) = pending.pop() {
            let used = resources.iter().any(|resource| resource.starts_with(&path));
            if !used {
                unused.push((
                    format!("{project}.{}", path.join(".")),
                    folder.line,
                    folder.column,
                ));
                continue;
            }
            for (name, child) in &folder.children {
                let mut longer = path.clone();
                longer.push(name.clone());
                pending.push((longer, child));
            }
        }
        unused.sort();
        unused
    }

    fn read(yaml: &Yaml, source: &SourceText, errors: &mut Vec<ProjectDiagnostic>) -> FolderConfig {
        let mut folder = FolderConfig::default();
        let rest = read_config_mapping(yaml, source, false, &mut folder.layer, errors);
        for (name, child) in rest {
            if child.entries().is_some() || child.is_null() {
                let mut read = FolderConfig::read(child, source, errors);
                let key = yaml
                    .entries()
                    .and_then(|entries| entries.iter().find(|(key, _)| key.name == name));
                if let Some((key, _)) = key {
                    (read.line, read.column) = (key.line, key.column);
                }
                folder.children.insert(name.to_string(), read);
            } else {
                errors.push(
                    ProjectDiagnostic::error(
                        "strata::project_config",
                        format!("'{name}' is neither a folder nor a setting"),
                    )
                    .at(source, child.line, child.column)
                    .with_hint(format!(
                        "settings in this block take a '+' prefix: '+{name}: …'; folders map to settings"
                    )),
                );
            }
        }
        folder
    }
}

/// A SQL file of the project: a model, a macro file or a singular test.
#[derive(Debug, Clone)]
pub struct SqlFile {
    /// Name of the node: the file stem.
    pub name: String,
    /// Folders between the resource root (such as `models/`) and the file.
    pub folders: Vec<String>,
    /// Path and text; the path is relative to the project folder.
    pub source: SourceText,
}

impl SqlFile {
    /// The layer of a model: the first folder under the model path (`bronze`, `silver`, `gold`).
    pub fn layer(&self) -> Option<&str> {
        self.folders.first().map(String::as_str)
    }
}

/// A seed CSV file with its header.
#[derive(Debug, Clone)]
pub struct SeedFile {
    /// Name of the seed: the file stem.
    pub name: String,
    /// Folders between the seed path and the file.
    pub folders: Vec<String>,
    /// Path relative to the project folder.
    pub path: PathBuf,
    /// Column names from the header row.
    pub columns: Vec<String>,
}

/// A parsed property (`.yml`) file.
#[derive(Debug, Clone)]
pub struct PropertyFile {
    /// Path and text.
    pub source: SourceText,
    /// The parsed document.
    pub document: Yaml,
}

/// Everything read from a project folder, before rendering.
#[derive(Debug, Clone)]
pub struct Project {
    /// The project folder (for a package, the package's own folder).
    pub root: PathBuf,
    /// Where the project's files are, relative to the root project's folder: empty for the
    /// root project, the install folder (`dbt_packages/<name>`) for a package. Every path of
    /// its files (sources, seeds, diagnostics) starts with it.
    pub folder: PathBuf,
    /// The project file (`dbt_project.yml` or `strata_project.yml`).
    pub project_file: SourceText,
    /// `name`.
    pub name: String,
    /// `model-paths`.
    pub model_paths: Vec<String>,
    /// `seed-paths`.
    pub seed_paths: Vec<String>,
    /// `test-paths`.
    pub test_paths: Vec<String>,
    /// `macro-paths`.
    pub macro_paths: Vec<String>,
    /// `snapshot-paths`.
    pub snapshot_paths: Vec<String>,
    /// `vars` of the project file.
    pub vars: serde_json::Map<String, serde_json::Value>,
    /// The hierarchical `models:` block.
    pub models_config: FolderConfig,
    /// The hierarchical `seeds:` block.
    pub seeds_config: FolderConfig,
    /// The hierarchical `data_tests:` (or `tests:`) block.
    pub tests_config: FolderConfig,
    /// The hierarchical `snapshots:` block.
    pub snapshots_config: FolderConfig,
    /// Model files, sorted by path.
    pub models: Vec<SqlFile>,
    /// Seed files, sorted by path.
    pub seeds: Vec<SeedFile>,
    /// Macro files, sorted by path.
    pub macros: Vec<SqlFile>,
    /// Singular test files, sorted by path.
    pub singular_tests: Vec<SqlFile>,
    /// Snapshots: each `{% snapshot %}` block of the snapshot paths, then each snapshot a
    /// property file declares with `relation:`.
    pub snapshots: Vec<SqlFile>,
    /// The files of the snapshot blocks as written (each block's own text is blanked
    /// outside the block, offsets kept, so diagnostics show these).
    pub snapshot_files: Vec<SourceText>,
    /// Property files, sorted by path.
    pub property_files: Vec<PropertyFile>,
    /// `packages-install-path`: where `dbt deps` (or `strata deps`) installs packages.
    pub packages_install_path: String,
    /// `dispatch:`: the packages searched for each macro namespace, in order.
    pub dispatch: BTreeMap<String, Vec<String>>,
    /// Installed packages (each folder of the install path with a project file), by name.
    pub packages: Vec<Project>,
}

/// Outcome of loading: the project (when its file could be read) and every diagnostic.
#[derive(Debug)]
pub struct Loaded {
    /// The project, unless the project file itself is missing or unreadable.
    pub project: Option<Project>,
    /// Problems found while loading.
    pub diagnostics: Diagnostics,
}

impl Project {
    /// Reads the project in `root`, collecting every problem instead of stopping at the first.
    pub fn load(root: &Path) -> Loaded {
        let mut diagnostics = Diagnostics::default();
        let mut project = load_project(root, Path::new(""), &mut diagnostics);
        if let Some(project) = &mut project {
            load_packages(project, &mut diagnostics);
        }
        Loaded {
            project,
            diagnostics,
        }
    }
}

/// Loads the project in `root.join(folder)`; its files' paths are relative to `root`.
fn load_project(root: &Path, folder: &Path, diagnostics: &mut Diagnostics) -> Option<Project> {
    let own_root = root.join(folder);
    let Some(file_name) = PROJECT_FILES
        .iter()
        .find(|name| own_root.join(name).is_file())
    else {
        let message = if own_root.is_dir() {
            format!(
                "no dbt_project.yml or strata_project.yml in {}",
                own_root.display()
            )
        } else {
            format!("project folder {} does not exist", own_root.display())
        };
        diagnostics.push(
            ProjectDiagnostic::error("strata::no_project", message).with_hint(
                "run the command in a project folder or pass --project-dir pointing at one",
            ),
        );
        return None;
    };
    let project_file = read_source(root, &folder.join(file_name), diagnostics)?;
    let document = match Yaml::parse(&project_file) {
        Ok(document) => document,
        Err(diagnostic) => {
            diagnostics.push(*diagnostic);
            return None;
        }
    };
    let mut errors = Vec::new();
    let mut project = Project {
        root: own_root,
        folder: folder.to_path_buf(),
        name: String::new(),
        model_paths: vec![String::from("models")],
        seed_paths: vec![String::from("seeds")],
        test_paths: vec![String::from("tests")],
        macro_paths: vec![String::from("macros")],
        snapshot_paths: vec![String::from("snapshots")],
        vars: serde_json::Map::new(),
        models_config: FolderConfig::default(),
        seeds_config: FolderConfig::default(),
        tests_config: FolderConfig::default(),
        snapshots_config: FolderConfig::default(),
        models: Vec::new(),
        seeds: Vec::new(),
        macros: Vec::new(),
        singular_tests: Vec::new(),
        snapshots: Vec::new(),
        snapshot_files: Vec::new(),
        property_files: Vec::new(),
        packages_install_path: String::from(DEFAULT_PACKAGES_INSTALL_PATH),
        dispatch: BTreeMap::new(),
        packages: Vec::new(),
        project_file: project_file.clone(),
    };
    read_project_keys(&document, &project_file, &mut project, &mut errors);
    for error in errors {
        diagnostics.push(error);
    }

    read_resource_files(root, &mut project, diagnostics);
    declared_snapshots(&mut project);
    Some(project)
}

/// What a resource folder (`model-paths`, `seed-paths`, …) holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resource {
    Model,
    Seed,
    Macro,
    Test,
    Snapshot,
}

/// Reads every resource folder: SQL files (CSV files for seeds) and property files.
fn read_resource_files(root: &Path, project: &mut Project, diagnostics: &mut Diagnostics) {
    let folders = [
        (Resource::Model, project.model_paths.clone()),
        (Resource::Seed, project.seed_paths.clone()),
        (Resource::Macro, project.macro_paths.clone()),
        (Resource::Test, project.test_paths.clone()),
        (Resource::Snapshot, project.snapshot_paths.clone()),
    ];
    for (resource, paths) in folders {
        for folder in paths {
            let folder = path_string(&project.folder.join(folder));
            for path in list_files(root, &folder, diagnostics) {
                match (resource, extension(&path)) {
                    (_, "yml" | "yaml") => read_properties(root, &path, project, diagnostics),
                    (Resource::Seed, "csv") => {
                        if let Some(seed) = seed_file(root, &folder, &path, diagnostics) {
                            project.seeds.push(seed);
                        }
                    }
                    (Resource::Seed, _) => {}
                    (resource, "sql") => {
                        if let Some(file) = sql_file(root, &folder, &path, diagnostics) {
                            add_sql_file(resource, file, project, diagnostics);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Files a SQL file of a resource folder under what it defines.
fn add_sql_file(
    resource: Resource,
    file: SqlFile,
    project: &mut Project,
    diagnostics: &mut Diagnostics,
) {
    match resource {
        Resource::Model => project.models.push(file),
        Resource::Macro => project.macros.push(file),
        // Generic test definitions (`{% test %}` blocks, by convention under tests/generic/)
        // are macros, not singular tests.
        Resource::Test
            if file.folders.first().is_some_and(|first| first == "generic")
                || defines_generic_test(&file.source.text) =>
        {
            project.macros.push(file);
        }
        Resource::Test => project.singular_tests.push(file),
        Resource::Snapshot => snapshot_blocks(&file, project, diagnostics),
        Resource::Seed => {}
    }
}

/// Adds the `{% snapshot %}` blocks of a file in the snapshot paths.
fn snapshot_blocks(file: &SqlFile, project: &mut Project, diagnostics: &mut Diagnostics) {
    project.snapshot_files.push(file.source.clone());
    match crate::snapshots::blocks(file) {
        Ok(found) => project.snapshots.extend(found),
        Err((message, line)) => diagnostics
            .push(ProjectDiagnostic::error("strata::snapshot", message).at(&file.source, line, 1)),
    }
}

/// Adds the snapshots that property files declare with `relation:` (dbt 1.9).
fn declared_snapshots(project: &mut Project) {
    let mut declared = Vec::new();
    for file in &project.property_files {
        let Some(YamlValue::Seq(list)) = file.document.get("snapshots").map(|v| &v.value) else {
            continue;
        };
        for item in list {
            if let (Some(name), Some(relation)) = (
                item.get("name").and_then(Yaml::as_str),
                item.get("relation"),
            ) && let Some(text) = relation.as_str()
            {
                declared.push(crate::snapshots::from_relation(
                    name,
                    text,
                    &file.source,
                    relation.line,
                ));
            }
        }
    }
    project.snapshots.extend(declared);
}

/// The default `packages-install-path`, as in dbt.
pub const DEFAULT_PACKAGES_INSTALL_PATH: &str = "dbt_packages";

/// Loads every installed package of `project`: each folder of its install path that holds a
/// project file. Problems in a package are reported like the project's own.
fn load_packages(project: &mut Project, diagnostics: &mut Diagnostics) {
    let root = project.root.clone();
    let install = Path::new(&project.packages_install_path);
    let Ok(entries) = std::fs::read_dir(root.join(install)) else {
        return;
    };
    let mut folders: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| install.join(entry.file_name())))
        .filter(|path| {
            PROJECT_FILES
                .iter()
                .any(|name| root.join(path).join(name).is_file())
        })
        .collect();
    folders.sort();
    for folder in folders {
        let mut package_diagnostics = Diagnostics::default();
        let Some(package) = load_project(&root, &folder, &mut package_diagnostics) else {
            diagnostics.extend(package_diagnostics);
            continue;
        };
        // A package's own unknown project keys are its authors' business, not the user's.
        for diagnostic in package_diagnostics {
            if diagnostic.code != "strata::project_file" || diagnostic.severity == Severity::Error {
                diagnostics.push(diagnostic);
            }
        }
        if package.name == project.name || project.packages.iter().any(|p| p.name == package.name) {
            diagnostics.push(
                ProjectDiagnostic::error(
                    "strata::duplicate_package",
                    format!("package '{}' is installed twice", package.name),
                )
                .in_file(&package.project_file.path)
                .with_hint("remove one of the folders, or run `strata deps` again"),
            );
            continue;
        }
        project.packages.push(package);
    }
}

fn read_project_keys(
    document: &Yaml,
    source: &SourceText,
    project: &mut Project,
    errors: &mut Vec<ProjectDiagnostic>,
) {
    let Some(entries) = document.entries() else {
        errors.push(
            ProjectDiagnostic::error(
                "strata::project_file",
                format!(
                    "the project file must be a mapping, found {}",
                    document.kind()
                ),
            )
            .at(source, document.line, document.column)
            .with_hint("start with 'name: my_project'"),
        );
        return;
    };
    for (key, value) in entries {
        match key.name.as_str() {
            "name" => match value.as_str() {
                Some(name) if is_identifier(name) => project.name = name.to_string(),
                _ => errors.push(
                    ProjectDiagnostic::error(
                        "strata::project_file",
                        format!(
                            "project name must be letters, digits and underscores, found {}",
                            value
                                .scalar_string()
                                .unwrap_or_else(|| value.kind().to_string())
                        ),
                    )
                    .at(source, value.line, value.column),
                ),
            },
            "model-paths" | "source-paths" => {
                project.model_paths = path_list(value, source, errors)
            }
            "seed-paths" | "data-paths" => project.seed_paths = path_list(value, source, errors),
            "test-paths" => project.test_paths = path_list(value, source, errors),
            "macro-paths" => project.macro_paths = path_list(value, source, errors),
            "snapshot-paths" => project.snapshot_paths = path_list(value, source, errors),
            "vars" => match value.to_json() {
                serde_json::Value::Object(vars) => project.vars = vars,
                serde_json::Value::Null => {}
                _ => errors.push(
                    ProjectDiagnostic::error(
                        "strata::project_file",
                        format!("'vars' must be a mapping, found {}", value.kind()),
                    )
                    .at(source, value.line, value.column),
                ),
            },
            "models" => project.models_config = FolderConfig::read(value, source, errors),
            "seeds" => project.seeds_config = FolderConfig::read(value, source, errors),
            "data_tests" | "tests" => {
                project.tests_config = FolderConfig::read(value, source, errors)
            }
            "snapshots" => project.snapshots_config = FolderConfig::read(value, source, errors),
            "packages-install-path" => match value.as_str() {
                Some(path) if is_relative_inside(path) => {
                    project.packages_install_path = path.to_string()
                }
                _ => errors.push(
                    ProjectDiagnostic::error(
                        "strata::project_file",
                        "'packages-install-path' must be a folder inside the project",
                    )
                    .at(source, value.line, value.column),
                ),
            },
            "dispatch" => project.dispatch = read_dispatch(value, source, errors),
            other if IGNORED_PROJECT_KEYS.contains(&other) => {}
            other if other.ends_with("-paths") || other == "sources" => {}
            other => errors.push(
                ProjectDiagnostic::warning(
                    "strata::project_file",
                    format!("unknown key '{other}' in the project file is ignored"),
                )
                .at(source, key.line, key.column),
            ),
        }
    }
    if project.name.is_empty() && errors.iter().all(|e| e.code != "strata::project_file") {
        errors.push(
            ProjectDiagnostic::error("strata::project_file", "the project file has no 'name'")
                .at(source, 1, 1)
                .with_hint("add 'name: my_project' at the top"),
        );
    }
}

/// Reads `dispatch:`: a list of `{macro_namespace: …, search_order: […]}`.
fn read_dispatch(
    value: &Yaml,
    source: &SourceText,
    errors: &mut Vec<ProjectDiagnostic>,
) -> BTreeMap<String, Vec<String>> {
    let mut orders = BTreeMap::new();
    let entries = match value.to_json() {
        serde_json::Value::Array(entries) => entries,
        serde_json::Value::Null => Vec::new(),
        _ => vec![serde_json::Value::Null],
    };
    for entry in entries {
        let namespace = entry.get("macro_namespace").and_then(|v| v.as_str());
        let order: Option<Vec<String>> = entry
            .get("search_order")
            .and_then(|v| v.as_array())
            .and_then(|names| names.iter().map(|n| n.as_str().map(String::from)).collect());
        match (namespace, order) {
            (Some(namespace), Some(order)) => {
                orders.insert(namespace.to_string(), order);
            }
            _ => errors.push(
                ProjectDiagnostic::error(
                    "strata::project_file",
                    "each 'dispatch' entry needs 'macro_namespace' and a 'search_order' list of package names",
                )
                .at(source, value.line, value.column)
                .with_hint("dispatch:\n  - macro_namespace: dbt_utils\n    search_order: ['my_project', 'dbt_utils']"),
            ),
        }
    }
    orders
}

fn path_list(
    value: &Yaml,
    source: &SourceText,
    errors: &mut Vec<ProjectDiagnostic>,
) -> Vec<String> {
    match &value.value {
        YamlValue::Seq(items) => items
            .iter()
            .filter_map(|item| match item.as_str() {
                Some(path) if is_relative_inside(path) => {
                    Some(path.trim_end_matches('/').to_string())
                }
                _ => {
                    errors.push(
                        ProjectDiagnostic::error(
                            "strata::project_file",
                            "each path must be a folder inside the project",
                        )
                        .at(source, item.line, item.column),
                    );
                    None
                }
            })
            .collect(),
        YamlValue::String(path) if is_relative_inside(path) => vec![path.clone()],
        _ => {
            errors.push(
                ProjectDiagnostic::error(
                    "strata::project_file",
                    format!("expected a list of folders, found {}", value.kind()),
                )
                .at(source, value.line, value.column)
                .with_hint("write for example: [\"models\"]"),
            );
            Vec::new()
        }
    }
}

fn is_relative_inside(path: &str) -> bool {
    let path = Path::new(path);
    !path.as_os_str().is_empty()
        && path.components().all(|part| {
            matches!(
                part,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        })
}

/// Returns true for names made of ASCII letters, digits and underscores, not starting with a
/// digit: safe as SQL identifiers without quoting.
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// True when a SQL file defines a generic test with a `{% test name(...) %}` block.
fn defines_generic_test(text: &str) -> bool {
    let (rewritten, edits) = crate::jinja::rewrite_test_blocks(text);
    !edits.is_empty() && rewritten.contains("macro test_")
}

fn extension(path: &Path) -> &str {
    path.extension()
        .and_then(|ext| ext.to_str())
        .unwrap_or_default()
}

/// Lists files under `root/folder`, recursively, sorted, relative to `root`. Hidden entries and
/// symlink loops are skipped.
fn list_files(root: &Path, folder: &str, diagnostics: &mut Diagnostics) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![PathBuf::from(folder)];
    let mut depth_guard = 0usize;
    while let Some(relative) = pending.pop() {
        depth_guard += 1;
        if depth_guard > 1_000_000 {
            break;
        }
        let absolute = root.join(&relative);
        let entries = match std::fs::read_dir(&absolute) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => {
                diagnostics.push(
                    ProjectDiagnostic::error("strata::io", format!("cannot read folder: {err}"))
                        .in_file(&relative),
                );
                continue;
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') {
                continue;
            }
            let path = relative.join(name);
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => pending.push(path),
                Ok(kind) if kind.is_file() => files.push(path),
                Ok(kind) if kind.is_symlink() && root.join(&path).is_file() => files.push(path),
                _ => {}
            }
        }
    }
    files.sort();
    files
}

fn read_source(root: &Path, relative: &Path, diagnostics: &mut Diagnostics) -> Option<SourceText> {
    match std::fs::read(root.join(relative)) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => Some(SourceText::new(relative, text)),
            Err(err) => {
                diagnostics.push(
                    ProjectDiagnostic::error(
                        "strata::encoding",
                        format!(
                            "file is not UTF-8 (invalid byte at offset {})",
                            err.utf8_error().valid_up_to()
                        ),
                    )
                    .in_file(relative)
                    .with_hint("save the file as UTF-8"),
                );
                None
            }
        },
        Err(err) => {
            diagnostics.push(
                ProjectDiagnostic::error("strata::io", format!("cannot read file: {err}"))
                    .in_file(relative),
            );
            None
        }
    }
}

/// A relative path written with `/` between its parts, whatever the platform.
pub(crate) fn path_string(path: &Path) -> String {
    path.components()
        .map(|part| part.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

fn folders_between(folder: &str, path: &Path) -> Vec<String> {
    let inner = path.strip_prefix(folder).unwrap_or(path);
    let mut parts: Vec<String> = inner
        .components()
        .map(|part| part.as_os_str().to_string_lossy().into_owned())
        .collect();
    parts.pop();
    parts
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn sql_file(
    root: &Path,
    folder: &str,
    path: &Path,
    diagnostics: &mut Diagnostics,
) -> Option<SqlFile> {
    let source = read_source(root, path, diagnostics)?;
    Some(SqlFile {
        name: stem(path),
        folders: folders_between(folder, path),
        source,
    })
}

fn seed_file(
    root: &Path,
    folder: &str,
    path: &Path,
    diagnostics: &mut Diagnostics,
) -> Option<SeedFile> {
    let file = match std::fs::File::open(root.join(path)) {
        Ok(file) => file,
        Err(err) => {
            diagnostics.push(
                ProjectDiagnostic::error("strata::io", format!("cannot read seed: {err}"))
                    .in_file(path),
            );
            return None;
        }
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(file);
    let columns = match reader.headers() {
        Ok(headers) => headers
            .iter()
            .map(|column| column.trim().to_string())
            .collect::<Vec<_>>(),
        Err(err) => {
            diagnostics.push(
                ProjectDiagnostic::error(
                    "strata::seed",
                    format!("cannot read the CSV header: {err}"),
                )
                .in_file(path)
                .with_hint("a seed's first line names its columns, separated by commas"),
            );
            return None;
        }
    };
    if columns.is_empty() || columns.iter().any(String::is_empty) {
        diagnostics.push(
            ProjectDiagnostic::error("strata::seed", "the CSV header has an empty column name")
                .in_file(path)
                .with_hint("give every column a name in the first line"),
        );
        return None;
    }
    let mut seen = std::collections::BTreeSet::new();
    for column in &columns {
        if !seen.insert(column.to_ascii_lowercase()) {
            diagnostics.push(
                ProjectDiagnostic::error(
                    "strata::seed",
                    format!("column '{column}' appears twice in the header"),
                )
                .in_file(path),
            );
            return None;
        }
    }
    Some(SeedFile {
        name: stem(path),
        folders: folders_between(folder, path),
        path: path.to_path_buf(),
        columns,
    })
}

fn read_properties(root: &Path, path: &Path, project: &mut Project, diagnostics: &mut Diagnostics) {
    let Some(source) = read_source(root, path, diagnostics) else {
        return;
    };
    match Yaml::parse(&source) {
        Ok(document) => project
            .property_files
            .push(PropertyFile { source, document }),
        Err(diagnostic) => diagnostics.push(*diagnostic),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, path: &str, text: &str) {
        let full = root.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, text).unwrap();
    }

    #[test]
    fn loads_files_and_folder_configs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(
            root,
            "dbt_project.yml",
            "name: shop\nprofile: x\nversion: '1.0'\nconfig-version: 2\nvars: {days: 3}\nmodels:\n  shop:\n    +materialized: view\n    gold:\n      +materialized: table\n      +tags: [daily]\n",
        );
        write(root, "models/gold/orders.sql", "select 1 as id");
        write(root, "models/schema.yml", "version: 2\n");
        write(root, "seeds/codes.csv", "code,name\n1,a\n");
        write(root, "macros/m.sql", "{% macro m() %}1{% endmacro %}");
        let loaded = Project::load(root);
        assert!(loaded.diagnostics.is_empty(), "{}", loaded.diagnostics);
        let project = loaded.project.unwrap();
        assert_eq!(project.name, "shop");
        assert_eq!(project.models[0].name, "orders");
        assert_eq!(project.models[0].layer(), Some("gold"));
        assert_eq!(project.seeds[0].columns, vec!["code", "name"]);
        assert_eq!(project.vars["days"], 3);
        let layers = project
            .models_config
            .layers_for("shop", &[String::from("gold")]);
        let config =
            crate::config::NodeConfig::resolve(crate::config::Materialization::View, layers);
        assert_eq!(config.materialized, crate::config::Materialization::Table);
        assert_eq!(config.tags, vec!["daily"]);
    }

    #[test]
    fn a_missing_project_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let loaded = Project::load(dir.path());
        let text = loaded.diagnostics.to_string();
        assert!(
            text.contains("no dbt_project.yml or strata_project.yml"),
            "{text}"
        );
        assert!(loaded.project.is_none());
    }

    #[test]
    fn bad_settings_point_at_their_line() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "dbt_project.yml",
            "name: p\nmodels:\n  p:\n    +materialized: tabel\n",
        );
        let loaded = Project::load(dir.path());
        let first = loaded.diagnostics.iter().next().expect("a diagnostic");
        assert_eq!(first.line, Some(4));
        assert!(
            first.message.contains("did you mean 'table'"),
            "{}",
            first.message
        );
    }
}
