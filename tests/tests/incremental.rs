//! Incremental models over two batches in embedded mode: merge on a composite key with NULLs
//! (no duplicates, unlike dbt-core #7873), append, and --full-refresh.

use std::path::Path;
use std::process::ExitCode;

use strata_tests::strata;

fn write(root: &Path, path: &str, text: &str) {
    let full = root.join(path);
    std::fs::create_dir_all(full.parent().unwrap()).unwrap();
    std::fs::write(full, text).unwrap();
}

/// A singular test that fails unless `model` has `rows` rows whose `value` adds up to `sum`.
fn expect(root: &Path, model: &str, rows: i64, sum: i64) -> ExitCode {
    write(
        root,
        "tests/expectation.sql",
        &format!(
            "select * from (select count(*) as n, sum(value) as s from {{{{ ref('{model}') }}}}) as t where n <> {rows} or s <> {sum}\n"
        ),
    );
    strata(&[
        "test",
        "--project-dir",
        root.to_str().unwrap(),
        "--select",
        "expectation",
    ])
}

#[test]
fn merge_with_null_keys_append_and_full_refresh() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "dbt_project.yml", "name: inc\n");
    write(
        root,
        "models/sources.yml",
        "version: 2\nsources:\n  - name: raw\n    tables:\n      - name: updates\n        meta: {external_location: data/updates.csv}\n",
    );
    write(
        root,
        "models/state.sql",
        "{{ config(materialized='incremental', unique_key=['id', 'region']) }}\n\
         select id, region, value, batch from {{ source('raw', 'updates') }}\n\
         {% if is_incremental() %}where batch > (select max(batch) from {{ this }}){% endif %}\n",
    );
    write(
        root,
        "models/log.sql",
        "{{ config(materialized='incremental', incremental_strategy='append') }}\n\
         select id, region, value, batch from {{ source('raw', 'updates') }}\n\
         {% if is_incremental() %}where batch > (select max(batch) from {{ this }}){% endif %}\n",
    );
    let dir_arg = root.to_str().unwrap();
    write(
        root,
        "data/updates.csv",
        "id,region,value,batch\n1,eu,10,1\n2,,20,1\n3,us,30,1\n",
    );
    assert_eq!(
        strata(&["run", "--project-dir", dir_arg]),
        ExitCode::SUCCESS
    );
    assert_eq!(expect(root, "state", 3, 60), ExitCode::SUCCESS);

    // Batch 2 updates key (1, eu) and the NULL-region key (2, NULL), and adds (4, eu).
    write(
        root,
        "data/updates.csv",
        "id,region,value,batch\n1,eu,10,1\n2,,20,1\n3,us,30,1\n2,,21,2\n4,eu,40,2\n1,eu,11,2\n",
    );
    assert_eq!(
        strata(&["run", "--project-dir", dir_arg]),
        ExitCode::SUCCESS
    );
    assert_eq!(
        expect(root, "state", 4, 11 + 21 + 30 + 40),
        ExitCode::SUCCESS,
        "merge must replace NULL-key rows"
    );
    assert_eq!(
        expect(root, "log", 6, 10 + 20 + 30 + 21 + 40 + 11),
        ExitCode::SUCCESS,
        "append keeps every row"
    );
    assert!(
        root.join("warehouse/main/log/_delta_log/00000000000000000001.json")
            .is_file(),
        "append is a second commit"
    );

    // A full refresh rebuilds from all rows (no key dedup without is_incremental()).
    assert_eq!(
        strata(&[
            "run",
            "--project-dir",
            dir_arg,
            "--full-refresh",
            "--select",
            "state"
        ]),
        ExitCode::SUCCESS
    );
    assert_eq!(expect(root, "state", 6, 132), ExitCode::SUCCESS);
}
