//! Golden compile tests: each folder under `tests/fixtures/compile` is a project; its compiled
//! SQL and manifest must equal the files under its `expected/` folder.

use std::path::Path;

use strata_tests::{case_vars, cases, check_golden, test_env};

fn compile_case(case: &Path) -> Vec<String> {
    let project = case.join("project");
    let vars = case_vars(case);
    let outcome = strata::run_compile(&project, vars.as_deref(), "dev", &[], &[], &test_env());
    assert!(
        !outcome.diagnostics.has_errors(),
        "{} failed to compile:\n{}",
        case.display(),
        outcome.diagnostics.render(false)
    );
    let manifest = outcome.manifest.expect("manifest");
    let expected = case.join("expected");
    let mut problems = Vec::new();
    problems.extend(check_golden(
        &expected.join("manifest.json"),
        &manifest.to_json(),
    ));
    for node in manifest.nodes.values() {
        if let (Some(path), Some(sql)) = (&node.compiled_path, &node.compiled_code) {
            problems.extend(check_golden(&expected.join(path), sql));
        }
    }
    // A second compile must be byte-identical: rendering is deterministic.
    let again = strata::run_compile(&project, vars.as_deref(), "dev", &[], &[], &test_env());
    if again.manifest.map(|m| m.to_json()) != Some(manifest.to_json()) {
        problems.push(format!(
            "{}: a second compile gave a different manifest",
            case.display()
        ));
    }
    problems
}

#[test]
fn every_fixture_project_compiles_to_its_golden_output() {
    let cases = cases("compile");
    assert!(!cases.is_empty(), "no compile fixtures found");
    let problems: Vec<String> = cases.iter().flat_map(|case| compile_case(case)).collect();
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

#[test]
fn the_medallion_example_compiles_to_its_golden_output() {
    let case = strata_tests::fixtures_dir().join("examples/medallion");
    let project = strata_tests::repo_root().join("examples/medallion");
    let outcome = strata::run_compile(&project, None, "dev", &[], &[], &test_env());
    assert!(
        !outcome.diagnostics.has_errors(),
        "{}",
        outcome.diagnostics.render(false)
    );
    let manifest = outcome.manifest.expect("manifest");
    let mut problems = Vec::new();
    problems.extend(check_golden(
        &case.join("manifest.json"),
        &manifest.to_json(),
    ));
    for node in manifest.nodes.values() {
        if let (Some(path), Some(sql)) = (&node.compiled_path, &node.compiled_code) {
            problems.extend(check_golden(&case.join(path), sql));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}
