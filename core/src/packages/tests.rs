//! Installing local and git packages (a git repository made here), and the errors.
use std::path::Path;
use std::process::Command;

use super::*;

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn git_in(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args([
            "-c",
            "user.name=strata",
            "-c",
            "user.email=strata@example.com",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
}

/// A git repository holding package `helpers` under `packages/helpers`, tagged `v1` with one
/// macro and then changed.
fn repository(dir: &Path) {
    let package = dir.join("packages/helpers");
    write(&package.join("dbt_project.yml"), "name: helpers\n");
    write(
        &package.join("macros/m.sql"),
        "{% macro version() %}1{% endmacro %}",
    );
    git_in(dir, &["init", "--quiet"]);
    git_in(dir, &["add", "."]);
    git_in(dir, &["commit", "--quiet", "-m", "v1"]);
    git_in(dir, &["tag", "v1"]);
    write(
        &package.join("macros/m.sql"),
        "{% macro version() %}2{% endmacro %}",
    );
    git_in(dir, &["commit", "--quiet", "-am", "v2"]);
}

#[test]
fn local_and_git_packages_install_under_their_project_names() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    repository(&repo);
    write(
        &dir.path().join("shared/dbt_project.yml"),
        "name: 'shared_macros'\n",
    );
    let project = dir.path().join("project");
    write(
        &project.join("packages.yml"),
        &format!(
            "packages:\n  - local: ../shared\n  - git: \"file://{}\"\n    revision: v1\n    subdirectory: packages/helpers\n",
            repo.display()
        ),
    );
    let installed = install(&project).unwrap();
    let names: Vec<&str> = installed.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["shared_macros", "helpers"]);
    let linked = project.join("dbt_packages/shared_macros");
    assert!(
        std::fs::symlink_metadata(&linked)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let macro_text =
        std::fs::read_to_string(project.join("dbt_packages/helpers/macros/m.sql")).unwrap();
    assert!(
        macro_text.contains("}1{"),
        "the tag's content: {macro_text}"
    );
    // Installing again replaces the packages.
    assert_eq!(install(&project).unwrap().len(), 2);
    assert!(!project.join("dbt_packages/.strata-clone").exists());
}

#[test]
fn unreachable_hub_and_malformed_declarations_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("packages.yml"),
        "packages:\n  - package: dbt-labs/dbt_utils\n    version: [\">=1.0.0\", \"<2.0.0\"]\n",
    );
    let error = install(dir.path()).unwrap_err().to_string();
    assert!(error.contains("dbt-labs/dbt_utils"), "{error}");
    assert!(error.contains("git:"), "{error}");

    write(
        &dir.path().join("packages.yml"),
        "packages:\n  - tarball: x\n",
    );
    let error = install(dir.path()).unwrap_err().to_string();
    assert!(error.contains("packages.yml"), "{error}");
    assert!(error.contains("'local:', 'git:' or 'package:'"), "{error}");

    write(
        &dir.path().join("packages.yml"),
        "packages:\n  - git: \"file:///nonexistent/repository\"\n",
    );
    let error = install(dir.path()).unwrap_err().to_string();
    assert!(error.contains("git clone failed"), "{error}");
}
