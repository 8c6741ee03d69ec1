//! Helpers for Strata's end-to-end tests: fixture folders and golden files.
//!
//! Golden files are compared byte for byte. Run the tests with `STRATA_BLESS=1` to rewrite
//! them after an intended change, then review the diff like any other code change.

#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The folder holding the fixture sets (`tests/fixtures`).
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Lists the case folders of a fixture set, sorted.
pub fn cases(set: &str) -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(fixtures_dir().join(set))
        .unwrap_or_else(|err| panic!("fixture set {set}: {err}"))
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.is_dir())
        .collect();
    cases.sort();
    cases
}

/// True when golden files should be rewritten instead of compared.
pub fn blessing() -> bool {
    std::env::var_os("STRATA_BLESS").is_some_and(|value| value != "0")
}

/// Compares `actual` with the golden file at `path` (or writes it when blessing). Returns a
/// description of the mismatch, if any.
pub fn check_golden(path: &Path, actual: &str) -> Option<String> {
    if blessing() {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create golden folder");
        }
        std::fs::write(path, actual).expect("write golden file");
        return None;
    }
    match std::fs::read_to_string(path) {
        Ok(expected) if expected == actual => None,
        Ok(expected) => Some(format!(
            "{} differs (rerun with STRATA_BLESS=1 to accept):\n{}",
            path.display(),
            first_difference(&expected, actual)
        )),
        Err(_) => Some(format!(
            "{} is missing (run with STRATA_BLESS=1 to create it); actual:\n{actual}",
            path.display()
        )),
    }
}

fn first_difference(expected: &str, actual: &str) -> String {
    for (index, (want, got)) in expected.lines().zip(actual.lines()).enumerate() {
        if want != got {
            return format!("line {}:\n  expected: {want}\n  actual:   {got}", index + 1);
        }
    }
    format!(
        "lengths differ: expected {} lines, got {}",
        expected.lines().count(),
        actual.lines().count()
    )
}

/// A fixed environment for compiles in tests, so `env_var()` results do not depend on the
/// machine.
pub fn test_env() -> BTreeMap<String, String> {
    BTreeMap::from([(String::from("STRATA_TEST_REGION"), String::from("eu-west"))])
}

/// Reads `vars.yml` of a case folder when present, for `--vars`.
pub fn case_vars(case: &Path) -> Option<String> {
    std::fs::read_to_string(case.join("vars.yml")).ok()
}

/// Copies a project folder, leaving out build outputs, data and warehouses.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let name = entry.file_name();
        if ["target", "data", "warehouse"]
            .iter()
            .any(|skip| name == *skip)
        {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            copy_dir(&path, &to.join(&name));
        } else {
            std::fs::copy(&path, to.join(&name)).unwrap();
        }
    }
}

/// Runs a `strata` command in this process with the test environment.
pub fn strata(args: &[&str]) -> std::process::ExitCode {
    let mut argv = vec!["strata"];
    argv.extend_from_slice(args);
    let cli = <strata::Cli as clap::Parser>::try_parse_from(argv).expect("valid arguments");
    strata::execute(cli, &test_env()).expect("command runs")
}

/// A copy of examples/medallion with `events` generated events in two batches.
pub fn medallion_with_data(events: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("medallion");
    copy_dir(&repo_root().join("examples/medallion"), &project);
    let data = project.join("data");
    let code = strata(&[
        "generate-sample-data",
        "--events",
        events,
        "--out",
        data.to_str().unwrap(),
        "--batches",
        "2",
    ]);
    assert_eq!(code, std::process::ExitCode::SUCCESS);
    (dir, project)
}
