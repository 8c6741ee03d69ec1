//! Every shape the rule rewrites gives DataFusion's own answer (its hash sets are exact, only
//! unbounded), NULLs, empty inputs and filters included.

use std::sync::Arc;

use datafusion::arrow::array::{BooleanArray, Decimal128Array, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::SessionContext;

use crate::session::{EngineConfig, session};

/// 300 rows: string and integer keys with NULLs, repeated and NULL distinct arguments,
/// integers, decimals and booleans with NULLs.
fn data() -> RecordBatch {
    let rows = 300usize;
    let pick = |i: usize, modulus: usize| (i * 7919 + 13) % modulus;
    let k: Vec<Option<String>> = (0..rows)
        .map(|i| (pick(i, 11) != 0).then(|| format!("k{}", pick(i, 5))))
        .collect();
    let g: Vec<Option<i64>> = (0..rows)
        .map(|i| (pick(i, 13) != 0).then_some(i as i64 % 3))
        .collect();
    let v: Vec<Option<String>> = (0..rows)
        .map(|i| (pick(i, 7) != 0).then(|| format!("v{}", pick(i, 4))))
        .collect();
    let z: Vec<Option<i64>> = (0..rows)
        .map(|i| (pick(i, 9) != 0).then_some(pick(i, 6) as i64 - 2))
        .collect();
    let amount: Vec<Option<i128>> = (0..rows)
        .map(|i| (pick(i, 17) != 0).then_some(pick(i, 1000) as i128 * 7))
        .collect();
    let flag: Vec<Option<bool>> = (0..rows)
        .map(|i| (pick(i, 19) != 0).then_some(pick(i, 3) == 0))
        .collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8, true),
        Field::new("g", DataType::Int64, true),
        Field::new("v", DataType::Utf8, true),
        Field::new("z", DataType::Int64, true),
        Field::new("amount", DataType::Decimal128(12, 2), true),
        Field::new("flag", DataType::Boolean, true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(k)),
            Arc::new(Int64Array::from(g)),
            Arc::new(StringArray::from(v)),
            Arc::new(Int64Array::from(z)),
            Arc::new(
                Decimal128Array::from(amount)
                    .with_precision_and_scale(12, 2)
                    .unwrap(),
            ),
            Arc::new(BooleanArray::from(flag)),
        ],
    )
    .unwrap()
}

/// The optimized plan and the sorted result of `sql` over `data()` (or no rows); with
/// `check_types`, the rows must have the types the plan declares.
async fn run(ctx: &SessionContext, sql: &str, empty: bool, check_types: bool) -> (String, String) {
    let batch = if empty { data().slice(0, 0) } else { data() };
    ctx.register_batch("t", batch).unwrap();
    let frame = ctx.sql(sql).await.unwrap();
    let plan = frame
        .clone()
        .into_optimized_plan()
        .unwrap()
        .display_indent()
        .to_string();
    let declared = frame.schema().as_arrow().clone();
    let batches = frame.collect().await.unwrap();
    for batch in batches.iter().filter(|_| check_types) {
        let types = |schema: &Schema| -> Vec<DataType> {
            schema
                .fields()
                .iter()
                .map(|field| field.data_type().clone())
                .collect()
        };
        assert_eq!(
            types(&batch.schema()),
            types(&declared),
            "{sql}: rows of other types than declared\n{plan}"
        );
    }
    let text = pretty_format_batches(&batches).unwrap().to_string();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    (plan, lines.join("\n"))
}

/// Asserts that Strata rewrites `sql` and gets DataFusion's answer, on the data and on no rows.
async fn check_rewritten(sql: &str) {
    for empty in [false, true] {
        let (strata, _) = session(&EngineConfig::default()).unwrap();
        let (plan, rewritten) = run(&strata, sql, empty, true).await;
        let distinct_aggregation = plan
            .lines()
            .any(|line| line.trim_start().starts_with("Aggregate:") && line.contains("DISTINCT"));
        assert!(
            plan.contains("__strata_distinct") && !distinct_aggregation,
            "{sql}\n{plan}"
        );
        // DataFusion's own plan for `count(distinct v), sum(d)` declares decimal(26,2) and
        // produces decimal(36,2): its types are not checked.
        let (_, plain) = run(&SessionContext::new(), sql, empty, false).await;
        assert_eq!(rewritten, plain, "{sql} (empty input: {empty})\n{plan}");
    }
}

#[tokio::test]
async fn one_distinct_argument_next_to_every_decomposable_aggregate() {
    for sql in [
        // The medallion's daily_user_activity and the shape that took 12 GB.
        "select k, g, count(*) as n, count(distinct v) as d, sum(z) as s from t group by k, g",
        "select k, count(*), count(distinct v), min(z), max(z), \
         sum(case when v = 'v1' then 1 else 0 end) from t group by k",
        "select k, count(z), avg(z), avg(amount), sum(amount), bool_and(flag), bool_or(flag), \
         count(distinct v) from t group by k",
        "select k, count(distinct v), sum(distinct z), avg(distinct z), max(distinct v) \
         from t group by k",
        "select count(*), count(distinct v), sum(z) from t",
        "select count(distinct lower(v)), count(distinct v) from t",
        "select g, count(distinct v) * 2 + count(*) as mixed from t group by g",
    ] {
        check_rewritten(sql).await;
    }
}

#[tokio::test]
async fn several_distinct_arguments_in_grouping_sets() {
    for sql in [
        "select k, count(distinct v), count(distinct z) from t group by k",
        "select k, g, count(*), count(distinct v), count(distinct z), sum(distinct z), \
         avg(z), min(amount), max(v) from t group by k, g",
        "select count(distinct v), count(distinct z), count(distinct g), count(*) from t",
        "select g, count(distinct v), sum(distinct amount), avg(amount), count(flag) \
         from t group by g",
    ] {
        check_rewritten(sql).await;
    }
}

#[tokio::test]
async fn filters_on_distinct_and_plain_aggregates() {
    for sql in [
        "select k, count(distinct v) filter (where z > 0), count(*) filter (where flag), \
         sum(z) filter (where v = 'v2') from t group by k",
        "select k, count(distinct v) filter (where flag), count(distinct v), \
         count(distinct z) filter (where z is not null and v <> 'v0'), \
         avg(z) filter (where flag) from t group by k",
        "select count(distinct z) filter (where k = 'k1'), count(*) from t",
    ] {
        check_rewritten(sql).await;
    }
}

#[tokio::test]
async fn shapes_that_do_not_decompose_are_left_to_datafusion() {
    let (ctx, _) = session(&EngineConfig::default()).unwrap();
    ctx.register_batch("t", data()).unwrap();
    for sql in [
        "select k, count(*) from t group by k",
        "select k, median(z), count(distinct v) from t group by k",
        "select k, string_agg(distinct v, ',') from t group by k",
        "select k, count(distinct v, z) from t group by k",
    ] {
        let plan = ctx
            .sql(sql)
            .await
            .unwrap()
            .into_optimized_plan()
            .unwrap()
            .display_indent()
            .to_string();
        assert!(!plan.contains("__strata"), "{sql}:\n{plan}");
    }
}

/// DataFusion 55's `SingleDistinctToGroupBy` sums a decimal `sum` again into a wider type
/// than its plan declares; Strata's rule runs before it and keeps the declared types.
#[tokio::test]
async fn decimal_sums_keep_their_type_under_a_window() {
    for sql in [
        "select k, count(distinct v) as d, sum(cast(z as decimal(16, 2))) as total from t group by k",
        "with p as (select k, v, cast(z as decimal(16, 2)) as gross from t), \
         m as (select k, count(distinct v) as d, sum(gross) as total from p group by k) \
         select k, d, total, lag(total) over (order by k) as prev from m",
        "select k, count(distinct v) as d, sum(amount) as total from t group by k",
        "select k, count(distinct v) as d, sum(cast(z as decimal(16, 2))) as total from t group by k",
    ] {
        check_rewritten(sql).await;
    }
}
