//! The deduplication rule and operator against DataFusion's window, in memory and spilled.
use std::sync::Arc;

use datafusion::arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::session::{EngineConfig, session};

/// Events with redeliveries: duplicate ids, NULL ids, NULL and tied-free orders.
fn events(batches: usize) -> Vec<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, true),
        Field::new("part", DataType::Int64, true),
        Field::new("ingested", DataType::Int64, true),
        Field::new("amount", DataType::Float64, true),
    ]));
    (0..batches)
        .map(|batch| {
            let rows = 500;
            let ids: Vec<Option<String>> = (0..rows)
                .map(|row| (row % 37 != 0).then(|| format!("e{}", (row * 7 + batch) % 97)))
                .collect();
            let parts: Vec<Option<i64>> = (0..rows)
                .map(|row| (row % 11 != 0).then_some((row % 3) as i64))
                .collect();
            // Unique per row so the winner is determined, and NULL for at most one row of a
            // key (the first 97 rows of batch 0 have distinct ids): NULLs sort first when
            // descending, so those rows win there.
            let ingested: Vec<Option<i64>> = (0..rows)
                .map(|row| {
                    let null = batch == 0 && row < 97 && row % 13 == 5;
                    (!null).then_some((batch * rows + row) as i64)
                })
                .collect();
            let amounts: Vec<Option<f64>> = (0..rows).map(|row| Some(row as f64 / 4.0)).collect();
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(StringArray::from(ids)),
                    Arc::new(Int64Array::from(parts)),
                    Arc::new(Int64Array::from(ingested)),
                    Arc::new(Float64Array::from(amounts)),
                ],
            )
            .unwrap()
        })
        .collect()
}

fn register(ctx: &SessionContext, batches: Vec<RecordBatch>) {
    let schema = batches[0].schema();
    // Two input partitions, so the operator's input is repartitioned by key.
    let half = batches.len() / 2;
    let (left, right) = batches.split_at(half);
    let table = MemTable::try_new(schema, vec![left.to_vec(), right.to_vec()]).unwrap();
    ctx.register_table("events", Arc::new(table)).unwrap();
}

fn strata_session(memory_limit_bytes: usize) -> SessionContext {
    let config = EngineConfig {
        memory_limit_bytes,
        target_partitions: 3,
        ..EngineConfig::default()
    };
    session(&config).unwrap().0
}

async fn sorted_rows(ctx: &SessionContext, sql: &str) -> Vec<String> {
    sorted_lines(&ctx.sql(sql).await.unwrap().collect().await.unwrap())
}

/// The rows of `batches` as table lines, sorted.
fn sorted_lines(batches: &[RecordBatch]) -> Vec<String> {
    let text = pretty_format_batches(batches).unwrap().to_string();
    let mut lines: Vec<String> = text
        .lines()
        .filter(|line| line.starts_with('|'))
        .skip(1)
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

async fn explain(ctx: &SessionContext, sql: &str) -> String {
    let batches = ctx
        .sql(&format!("explain {sql}"))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    pretty_format_batches(&batches).unwrap().to_string()
}

/// Runs `sql` with Strata's session and with plain DataFusion, and checks the results are
/// equal and whether the rewrite fired.
async fn check(sql: &str, rewritten: bool) {
    let strata = strata_session(1 << 30);
    register(&strata, events(6));
    let plain = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(3));
    register(&plain, events(6));
    let plan = explain(&strata, sql).await;
    assert_eq!(
        plan.contains("FirstRowPerKeyExec"),
        rewritten,
        "{sql}\n{plan}"
    );
    let expected = sorted_rows(&plain, sql).await;
    assert!(!expected.is_empty(), "{sql} returns nothing");
    assert_eq!(sorted_rows(&strata, sql).await, expected, "{sql}");
}

#[tokio::test]
async fn latest_delivery_per_key_equals_the_window() {
    check(
        "select id, ingested, amount from (
             select *, row_number() over (partition by id order by ingested desc) as rn
             from events) where rn = 1",
        true,
    )
    .await;
}

/// Single keys kept in column form: an integer column with NULLs, a computed integer, a
/// computed string, and a float (row format: `-0.0` is not `0.0` by its bytes).
#[tokio::test]
async fn single_integer_computed_and_float_keys_equal_the_window() {
    for key in ["part", "ingested % 50", "upper(id)", "amount"] {
        check(
            &format!(
                "select id, part, ingested from (
                     select *, row_number() over (partition by {key} order by ingested desc, id) as rn
                     from events) where rn = 1"
            ),
            true,
        )
        .await;
    }
}

#[tokio::test]
async fn composite_keys_nulls_last_and_the_rank_column_kept() {
    check(
        "select * from (
             select id, part, ingested,
                    row_number() over (partition by part, id order by ingested asc nulls last, amount desc) as rank
             from events) ranked where rank <= 1",
        true,
    )
    .await;
}

#[tokio::test]
async fn flipped_and_strict_bounds_and_other_conjuncts() {
    for predicate in ["1 = rn and amount > 10", "rn < 2", "amount > 3 and rn <= 1"] {
        check(
            &format!(
                "select id, amount from (
                     select *, row_number() over (partition by id order by ingested) as rn
                     from events) where {predicate}"
            ),
            true,
        )
        .await;
    }
}

#[tokio::test]
async fn other_ranks_and_functions_keep_the_window() {
    for (window, predicate) in [
        (
            "row_number() over (partition by id order by ingested)",
            "rn = 2",
        ),
        (
            "row_number() over (partition by id order by ingested)",
            "rn <= 3",
        ),
        ("rank() over (partition by id order by ingested)", "rn = 1"),
    ] {
        check(
            &format!(
                "select id, ingested from (select *, {window} as rn from events) where {predicate}"
            ),
            false,
        )
        .await;
    }
}

#[tokio::test]
async fn no_partition_keys_keeps_one_row() {
    check(
        "select id, ingested from (
             select *, row_number() over (order by ingested desc nulls last) as rn
             from events) where rn = 1",
        true,
    )
    .await;
}

#[tokio::test]
async fn ties_keep_exactly_one_whole_input_row_per_key() {
    let ctx = strata_session(1 << 30);
    register(&ctx, events(4));
    // `part` has three values, so most rows tie; each key must still give one row, and
    // that row must exist in the input as a whole.
    let sql = "select id, part, ingested, amount from (
                   select *, row_number() over (partition by id order by part) as rn
                   from events) where rn = 1";
    assert!(explain(&ctx, sql).await.contains("FirstRowPerKeyExec"));
    let rows = sorted_rows(&ctx, sql).await;
    let keys = sorted_rows(&ctx, "select distinct id from events").await;
    assert_eq!(rows.len(), keys.len());
    let input = sorted_rows(&ctx, "select id, part, ingested, amount from events").await;
    for row in rows {
        assert!(
            input.binary_search(&row).is_ok(),
            "{row} is not an input row"
        );
    }
}

/// Twenty thousand nearly unique keys against a pool of 256 KiB: the winners cannot be held,
/// so they are partitioned to disk (more than one level deep) and each part deduplicated on
/// its own; the result is the window's.
#[tokio::test]
async fn winners_beyond_the_memory_limit_spill_and_equal_the_window() {
    let sql = "select * from (
                   select *, row_number() over (partition by id, ingested order by amount) as rn
                   from events) where rn = 1";
    let strata = strata_session(256 << 10);
    register(&strata, events(40));
    assert!(explain(&strata, sql).await.contains("FirstRowPerKeyExec"));
    let plain = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(3));
    register(&plain, events(40));
    let expected = sorted_rows(&plain, sql).await;
    assert!(expected.len() > 15_000, "{}", expected.len());
    assert_eq!(sorted_rows(&strata, sql).await, expected);
}

/// The same with one integer key, compared by its bytes in column form, partitioned to disk.
#[tokio::test]
async fn unique_integer_keys_beyond_the_memory_limit_spill_and_equal_the_window() {
    let sql = "select * from (
                   select *, row_number() over (partition by ingested order by amount) as rn
                   from events) where rn = 1";
    let strata = strata_session(256 << 10);
    register(&strata, events(40));
    let plain = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(3));
    register(&plain, events(40));
    let expected = sorted_rows(&plain, sql).await;
    assert!(expected.len() > 15_000, "{}", expected.len());
    assert_eq!(sorted_rows(&strata, sql).await, expected);
}

/// Runs `sql` and returns its rows, sorted, with the rows the deduplication wrote to disk.
async fn rows_and_spilled_rows(ctx: &SessionContext, sql: &str) -> (Vec<String>, usize) {
    use datafusion::physical_plan::{ExecutionPlan, collect};
    fn spilled(plan: &Arc<dyn ExecutionPlan>) -> usize {
        let own = if plan.name() == "FirstRowPerKeyExec" {
            plan.metrics()
                .and_then(|metrics| metrics.spilled_rows())
                .unwrap_or(0)
        } else {
            0
        };
        own + plan.children().into_iter().map(spilled).sum::<usize>()
    }
    let frame = ctx.sql(sql).await.unwrap();
    let task = Arc::new(frame.task_ctx());
    let plan = frame.create_physical_plan().await.unwrap();
    let batches = collect(Arc::clone(&plan), task).await.unwrap();
    (sorted_lines(&batches), spilled(&plan))
}

/// A pool just short of what the winners need: a quarter of the key partitions go to disk and
/// the others stay in memory, so about a quarter of the rows are written (the whole input went
/// to disk before), and the result is still the window's. A pool far too small writes every
/// row, some more than once.
#[tokio::test]
async fn a_pool_just_short_spills_some_key_partitions_and_keeps_the_rest() {
    let sql = "select * from (
                   select *, row_number() over (partition by id, ingested order by amount) as rn
                   from events) where rn = 1";
    let plain = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(3));
    register(&plain, events(40));
    let expected = sorted_rows(&plain, sql).await;
    let input_rows = 40 * 500;

    let just_short = strata_session(3 << 20);
    register(&just_short, events(40));
    let (rows, spilled) = rows_and_spilled_rows(&just_short, sql).await;
    assert_eq!(rows, expected);
    assert!(
        spilled > 0 && spilled < input_rows / 3,
        "{spilled} of {input_rows} rows spilled"
    );

    let far_too_small = strata_session(256 << 10);
    register(&far_too_small, events(40));
    let (rows, spilled_all) = rows_and_spilled_rows(&far_too_small, sql).await;
    assert_eq!(rows, expected);
    assert!(spilled_all > spilled, "{spilled_all} vs {spilled}");
}
