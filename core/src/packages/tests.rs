//! Installing local, git and Hub packages (git repositories made here, a Hub served here), and
//! the errors.
use std::path::Path;
use std::process::Command;

use super::*;

/// A Hub address nothing listens on.
const UNREACHABLE_HUB: &str = "http://127.0.0.1:9";

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
fn local_and_git_packages_install_under_their_project_names_with_their_own_packages() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    repository(&repo);
    write(
        &dir.path().join("shared/dbt_project.yml"),
        "name: 'shared_macros'\n",
    );
    // The shared package needs another (relative to itself) and the project's git package.
    write(
        &dir.path().join("deep/dbt_project.yml"),
        "name: deep_macros\n",
    );
    write(
        &dir.path().join("shared/packages.yml"),
        &format!(
            "packages:\n  - local: ../deep\n  - git: \"file://{}.git\"\n    subdirectory: packages/helpers\n",
            repo.display()
        ),
    );
    let project = dir.path().join("project");
    write(
        &project.join("packages.yml"),
        &format!(
            "packages:\n  - local: ../shared\n  - git: \"file://{}\"\n    revision: v1\n    subdirectory: packages/helpers\n",
            repo.display()
        ),
    );
    let installed = install(&project, UNREACHABLE_HUB).unwrap();
    let names: Vec<&str> = installed.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["shared_macros", "helpers", "deep_macros"]);
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
    assert_eq!(install(&project, UNREACHABLE_HUB).unwrap().len(), 3);
    assert!(!project.join("dbt_packages/.strata-clone").exists());
}

#[test]
fn unreachable_hub_and_malformed_declarations_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("packages.yml"),
        "packages:\n  - package: dbt-labs/dbt_utils\n    version: [\">=1.0.0\", \"<2.0.0\"]\n",
    );
    let error = install(dir.path(), UNREACHABLE_HUB)
        .unwrap_err()
        .to_string();
    assert!(error.contains("dbt-labs/dbt_utils"), "{error}");
    assert!(error.contains("git:"), "{error}");

    write(
        &dir.path().join("packages.yml"),
        "packages:\n  - tarball: x\n",
    );
    let error = install(dir.path(), UNREACHABLE_HUB)
        .unwrap_err()
        .to_string();
    assert!(error.contains("packages.yml"), "{error}");
    assert!(error.contains("'local:', 'git:' or 'package:'"), "{error}");

    write(
        &dir.path().join("packages.yml"),
        "packages:\n  - git: \"file:///nonexistent/repository\"\n",
    );
    let error = install(dir.path(), UNREACHABLE_HUB)
        .unwrap_err()
        .to_string();
    assert!(error.contains("git clone failed"), "{error}");
}

/// Serves `files` (path → body) over HTTP on a free port, answering 404 otherwise, until the
/// test ends; returns the server's URL.
fn hub_server(files: Vec<(String, String)>) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(&stream);
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            let path = request
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_string();
            let response = match files.iter().find(|(file, _)| *file == path) {
                Some((_, body)) => format!(
                    "HTTP/1.0 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                ),
                None => String::from("HTTP/1.0 404 Not Found\r\ncontent-length: 0\r\n\r\n"),
            };
            let _ = (&stream).write_all(response.as_bytes());
        }
    });
    url
}

#[test]
fn hub_packages_install_the_highest_version_in_range_from_their_repository() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("dbt-helpers");
    write(&repo.join("dbt_project.yml"), "name: helpers\n");
    for version in ["1.0.0", "1.1.0", "2.0.0"] {
        write(
            &repo.join("macros/m.sql"),
            &format!("{{% macro version() %}}{version}{{% endmacro %}}"),
        );
        if version == "1.0.0" {
            git_in(&repo, &["init", "--quiet"]);
            git_in(&repo, &["add", "."]);
        }
        git_in(&repo, &["commit", "--quiet", "-am", version]);
        git_in(&repo, &["tag", version]);
    }
    let source = |version: &str| {
        format!(
            "{{\"_source\": {{\"url\": \"file://{}/tree/{version}/\"}}}}",
            repo.display()
        )
    };
    let index = format!(
        "{{\"name\": \"helpers\", \"versions\": {{\"1.0.0\": {}, \"1.1.0\": {}, \"2.0.0\": {}}}}}",
        source("1.0.0"),
        source("1.1.0"),
        source("2.0.0")
    );
    let hub = hub_server(vec![(String::from("/api/v1/acme/helpers.json"), index)]);
    let project = dir.path().join("project");
    write(&project.join("dbt_project.yml"), "name: shop\n");
    write(
        &project.join("packages.yml"),
        "packages:\n  - package: acme/helpers\n    version: [\">=1.0.0\", \"<2.0.0\"]\n",
    );
    let installed = install(&project, &hub).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(installed.len(), 1);
    assert_eq!(installed[0].name, "helpers");
    let installed_macro =
        std::fs::read_to_string(project.join("dbt_packages/helpers/macros/m.sql")).unwrap();
    assert!(installed_macro.contains("1.1.0"), "{installed_macro}");

    write(
        &project.join("packages.yml"),
        "packages:\n  - package: acme/missing\n    version: 1.0.0\n",
    );
    let err = install(&project, &hub)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("acme/missing") && err.contains("org/name"),
        "{err}"
    );

    write(
        &project.join("packages.yml"),
        "packages:\n  - package: acme/helpers\n    version: \">3.0.0\"\n",
    );
    let err = install(&project, &hub)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("no version") && err.contains("2.0.0"), "{err}");

    let unreachable = install(&project, "http://127.0.0.1:9")
        .err()
        .map(|e| e.to_string());
    assert!(
        unreachable
            .as_deref()
            .is_some_and(|e| e.contains("without network")),
        "{unreachable:?}"
    );
}
