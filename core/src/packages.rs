//! `strata deps`: installs the packages a project declares in `packages.yml` (or
//! `dependencies.yml`) into its install path (`dbt_packages/`), where [`crate::project`] loads
//! them, as `dbt deps` does.
//!
//! - `local: path` — linked (a symbolic link), so that edits to the package show at once;
//! - `git: url` with an optional `revision` (tag, branch or commit) and `subdirectory` — cloned
//!   with the machine's `git`;
//! - `package: org/name` with `version` (one or a range) — a dbt Hub package: the Hub's index
//!   names the repository and tag of the highest version in range ([`hub`]), which is then
//!   cloned as a git package; without network, the error says to use a `git:` entry instead.
//!
//! Each package is installed under its own project name (the `name:` of its project file),
//! and the packages it declares in turn are installed beside it.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::project::{DEFAULT_PACKAGES_INSTALL_PATH, PROJECT_FILES};

/// The files that declare packages, in the order they are looked for.
pub const PACKAGE_FILES: [&str; 2] = ["packages.yml", "dependencies.yml"];

/// Why installing packages failed.
#[derive(Debug, thiserror::Error)]
pub enum DepsError {
    /// The package file is not valid.
    #[error("{file}: {message}")]
    Declaration {
        /// The package file.
        file: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A package could not be fetched or placed.
    #[error("package {package}: {message}")]
    Install {
        /// The package as declared (`local: ../x`, `git: url`, `package: org/name`).
        package: String,
        /// What went wrong and what to do.
        message: String,
    },
}

/// One declared package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackageSpec {
    /// `local: path`, relative to the project.
    Local(PathBuf),
    /// `git: url`, `revision`, `subdirectory`.
    Git {
        /// The repository.
        url: String,
        /// A tag, branch or commit; the default branch when absent.
        revision: Option<String>,
        /// The package's folder inside the repository.
        subdirectory: Option<String>,
    },
    /// `package: org/name`, `version`, from dbt Hub.
    Hub {
        /// `org/name`.
        name: String,
        /// The version or range as written.
        version: String,
    },
}

impl PackageSpec {
    /// What makes two declarations the same package: the Hub name (whatever the version),
    /// the repository (and folder in it), or the resolved local folder.
    fn identity(&self, declared_in: &Path) -> String {
        match self {
            Self::Local(path) => {
                let folder = declared_in.join(path);
                format!(
                    "local:{}",
                    folder.canonicalize().unwrap_or(folder).display()
                )
            }
            Self::Git {
                url, subdirectory, ..
            } => format!(
                "git:{}/{}",
                url.trim_end_matches('/').trim_end_matches(".git"),
                subdirectory.as_deref().unwrap_or_default()
            ),
            Self::Hub { name, .. } => format!("hub:{}", name.to_lowercase()),
        }
    }
}

impl std::fmt::Display for PackageSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local(path) => write!(f, "local: {}", path.display()),
            Self::Git { url, revision, .. } => match revision {
                Some(revision) => write!(f, "git: {url} ({revision})"),
                None => write!(f, "git: {url}"),
            },
            Self::Hub { name, version } => write!(f, "package: {name} ({version})"),
        }
    }
}

/// What was installed: each package's name and folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// The package's project name.
    pub name: String,
    /// Where it now is.
    pub folder: PathBuf,
    /// The declaration it came from.
    pub spec: PackageSpec,
}

/// Reads the packages declared in `root`'s package file; none when there is no such file.
///
/// # Errors
/// Returns [`DepsError::Declaration`] for a file that is not a list of package entries.
pub fn declared_packages(root: &Path) -> Result<Vec<PackageSpec>, DepsError> {
    let Some(file) = PACKAGE_FILES
        .iter()
        .map(|name| root.join(name))
        .find(|path| path.is_file())
    else {
        return Ok(Vec::new());
    };
    let declaration = |message: String| DepsError::Declaration {
        file: file.clone(),
        message,
    };
    let text = std::fs::read_to_string(&file).map_err(|err| declaration(err.to_string()))?;
    let document: serde_json::Value =
        serde_saphyr::from_str(&text).map_err(|err| declaration(err.to_string()))?;
    let entries = match document.get("packages") {
        None | Some(serde_json::Value::Null) => return Ok(Vec::new()),
        Some(serde_json::Value::Array(entries)) => entries,
        Some(_) => return Err(declaration(String::from("'packages' must be a list"))),
    };
    entries
        .iter()
        .map(|entry| package_spec(entry).map_err(declaration))
        .collect()
}

/// One entry of `packages:`.
fn package_spec(entry: &serde_json::Value) -> Result<PackageSpec, String> {
    let text = |key: &str| entry.get(key).and_then(serde_json::Value::as_str);
    if let Some(path) = text("local") {
        return Ok(PackageSpec::Local(PathBuf::from(path)));
    }
    if let Some(url) = text("git") {
        let revision = match entry.get("revision") {
            Some(serde_json::Value::String(revision)) => Some(revision.clone()),
            Some(serde_json::Value::Number(number)) => Some(number.to_string()),
            _ => None,
        };
        return Ok(PackageSpec::Git {
            url: url.to_string(),
            revision,
            subdirectory: text("subdirectory").map(str::to_string),
        });
    }
    if let Some(name) = text("package") {
        let version = match entry.get("version") {
            Some(serde_json::Value::Array(range)) => range
                .iter()
                .filter_map(serde_json::Value::as_str)
                .collect::<Vec<_>>()
                .join(", "),
            Some(serde_json::Value::String(version)) => version.clone(),
            Some(serde_json::Value::Number(number)) => number.to_string(),
            _ => return Err(format!("package '{name}' needs a 'version'")),
        };
        return Ok(PackageSpec::Hub {
            name: name.to_string(),
            version,
        });
    }
    Err(format!(
        "each package needs 'local:', 'git:' or 'package:', found {entry}"
    ))
}

/// Installs every package `root` declares into its install path (the project file's
/// `packages-install-path`, else `dbt_packages`), replacing earlier installs of the same
/// packages; Hub packages are resolved through the Hub at `hub_url`
/// ([`hub::DEFAULT_HUB_URL`] unless a mirror is given).
///
/// # Errors
/// Returns the first package that could not be installed, with what to do.
pub fn install(root: &Path, hub_url: &str) -> Result<Vec<Installed>, DepsError> {
    let install_dir = root.join(install_path(root));
    let specs = declared_packages(root)?;
    if specs.is_empty() {
        return Ok(Vec::new());
    }
    std::fs::create_dir_all(&install_dir).map_err(|err| DepsError::Install {
        package: String::from("(all)"),
        message: format!("cannot create {}: {err}", install_dir.display()),
    })?;
    // The project's packages, then theirs (dbt_expectations needs dbt_date), breadth first;
    // a package declared twice is installed once, as first declared.
    let mut pending: std::collections::VecDeque<(PathBuf, PackageSpec)> = specs
        .into_iter()
        .map(|spec| (root.to_path_buf(), spec))
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    let mut installed = Vec::new();
    while let Some((declared_in, spec)) = pending.pop_front() {
        if !seen.insert(spec.identity(&declared_in)) {
            continue;
        }
        let package =
            install_one(&declared_in, &install_dir, &spec, hub_url).map_err(|message| {
                DepsError::Install {
                    package: spec.to_string(),
                    message,
                }
            })?;
        if installed
            .iter()
            .any(|other: &Installed| other.name == package.name)
        {
            continue;
        }
        for dependency in declared_packages(&package.folder)? {
            pending.push_back((package.folder.clone(), dependency));
        }
        installed.push(package);
    }
    Ok(installed)
}

fn install_one(
    root: &Path,
    install_dir: &Path,
    spec: &PackageSpec,
    hub_url: &str,
) -> Result<Installed, String> {
    match spec {
        PackageSpec::Local(path) => {
            let source = root.join(path);
            let source = source
                .canonicalize()
                .map_err(|err| format!("{}: {err}", source.display()))?;
            let name = package_name(&source)?;
            let folder = install_dir.join(&name);
            remove_existing(&folder)?;
            link(&source, &folder)?;
            Ok(Installed {
                name,
                folder,
                spec: spec.clone(),
            })
        }
        PackageSpec::Git {
            url,
            revision,
            subdirectory,
        } => {
            let staging = install_dir.join(".strata-clone");
            remove_existing(&staging)?;
            clone(url, revision.as_deref(), &staging)?;
            let package_root = match subdirectory {
                Some(sub) => staging.join(sub),
                None => staging.clone(),
            };
            let name = package_name(&package_root)?;
            let folder = install_dir.join(&name);
            remove_existing(&folder)?;
            std::fs::rename(&package_root, &folder)
                .map_err(|err| format!("cannot move the clone to {}: {err}", folder.display()))?;
            remove_existing(&staging)?;
            Ok(Installed {
                name,
                folder,
                spec: spec.clone(),
            })
        }
        PackageSpec::Hub { name, version } => {
            let resolved = hub::resolve(hub_url, name, version)?;
            let git = PackageSpec::Git {
                url: resolved.git_url,
                revision: Some(resolved.revision),
                subdirectory: None,
            };
            let installed = install_one(root, install_dir, &git, hub_url)?;
            Ok(Installed {
                spec: spec.clone(),
                ..installed
            })
        }
    }
}

/// The project file of the project in `folder`, parsed.
fn project_document(folder: &Path) -> Result<serde_json::Value, String> {
    let file = PROJECT_FILES
        .iter()
        .map(|name| folder.join(name))
        .find(|path| path.is_file())
        .ok_or_else(|| format!("{} has no dbt_project.yml", folder.display()))?;
    let text = std::fs::read_to_string(&file).map_err(|err| err.to_string())?;
    serde_saphyr::from_str(&text).map_err(|err| format!("{}: {err}", file.display()))
}

/// Where `root`'s packages go: its `packages-install-path`, else dbt's default.
fn install_path(root: &Path) -> String {
    project_document(root)
        .ok()
        .and_then(|document| {
            document
                .get("packages-install-path")
                .and_then(serde_json::Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| DEFAULT_PACKAGES_INSTALL_PATH.to_string())
}

/// The project name of the package in `folder`.
fn package_name(folder: &Path) -> Result<String, String> {
    project_document(folder)?
        .get("name")
        .and_then(serde_json::Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| format!("the project file in {} has no 'name'", folder.display()))
}

fn remove_existing(path: &Path) -> Result<(), String> {
    let Ok(metadata) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    let removed = if metadata.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    removed.map_err(|err| format!("cannot replace {}: {err}", path.display()))
}

#[cfg(unix)]
fn link(source: &Path, folder: &Path) -> Result<(), String> {
    std::os::unix::fs::symlink(source, folder)
        .map_err(|err| format!("cannot link {}: {err}", folder.display()))
}

#[cfg(not(unix))]
fn link(source: &Path, folder: &Path) -> Result<(), String> {
    Err(format!(
        "local packages are linked, which needs a Unix system; copy {} to {}",
        source.display(),
        folder.display()
    ))
}

/// Clones `url` at `revision` into `into` with the machine's `git`.
fn clone(url: &str, revision: Option<&str>, into: &Path) -> Result<(), String> {
    git(&["clone", "--quiet", url, &into.to_string_lossy()], None)?;
    if let Some(revision) = revision {
        git(&["checkout", "--quiet", revision], Some(into))?;
    }
    Ok(())
}

fn git(args: &[&str], dir: Option<&Path>) -> Result<(), String> {
    let mut command = Command::new("git");
    command.args(args).env("GIT_TERMINAL_PROMPT", "0");
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    let output = command
        .output()
        .map_err(|err| format!("cannot run git ({err}); install git to fetch git packages"))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let hint = if stderr.contains("Could not resolve host") || stderr.contains("unable to access") {
        " (no network? clone the repository elsewhere and declare it with `local:`)"
    } else {
        ""
    };
    Err(format!(
        "git {} failed: {}{hint}",
        args.first().copied().unwrap_or_default(),
        stderr.trim()
    ))
}

pub mod hub;

#[cfg(test)]
mod tests;
