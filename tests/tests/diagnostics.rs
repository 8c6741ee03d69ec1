//! Diagnostics tests: each folder under `tests/fixtures/diagnostics` is a broken project; the
//! rendered errors (message, file, line, snippet, hint) must equal its `expected.txt`.

use strata_tests::{case_vars, cases, check_golden, test_env};

#[test]
fn every_broken_project_reports_its_expected_diagnostics() {
    let cases = cases("diagnostics");
    assert!(!cases.is_empty(), "no diagnostics fixtures found");
    let mut problems = Vec::new();
    for case in &cases {
        let vars = case_vars(case);
        let outcome = strata::run_compile(
            &case.join("project"),
            vars.as_deref(),
            "dev",
            &[],
            &[],
            &test_env(),
        );
        if !outcome.diagnostics.has_errors() {
            problems.push(format!(
                "{}: expected errors, compiled cleanly",
                case.display()
            ));
            continue;
        }
        let rendered = outcome.diagnostics.render(false);
        // Paths in messages are relative to the project, so the text does not depend on the
        // checkout location.
        problems.extend(check_golden(&case.join("expected.txt"), &rendered));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}
