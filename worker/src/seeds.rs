//! Seeds typed as dbt-duckdb types them, where DataFusion's CSV inference differs:
//!
//! - a column of whole numbers is a 32-bit `integer` (dbt's type for agate's integral numbers)
//!   where DataFusion says 64-bit; a column whose values do not fit in 32 bits stays 64-bit
//!   rather than failing the load;
//! - a text column whose every value is a timestamp or a date as DuckDB reads them, with
//!   one-digit fields (`2024-12-30 3:15:52`, `2024-1-5`), which Arrow's inference leaves as
//!   text, is a `timestamp` (every value has a time) or a `date` (none has).
//!
//! Columns typed by `column_types` are left as the user typed them.

use datafusion::arrow::array::{Array, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::prelude::SessionContext;
use strata_engine::TaskError;
use strata_engine::identifiers::quoted as quote;

/// How a seed column is retyped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retype {
    Keep,
    Int32,
    Timestamp,
    Date,
}

/// One column whose type depends on its values, and the aggregates that decide it.
struct Candidate<'a> {
    name: &'a String,
    /// The first of its aggregates in the bounds query.
    first: usize,
    kind: CandidateKind,
}

#[derive(Clone, Copy)]
enum CandidateKind {
    /// A 64-bit integer column: min and max.
    Wide,
    /// A text column: values, values that cast to timestamps, to dates, values with a time.
    Text,
}

/// The seed's SQL with its columns retyped as dbt-duckdb types them (see the module
/// documentation).
///
/// # Errors
/// Returns the engine's error when the seed cannot be read.
pub async fn seed_sql(
    ctx: &SessionContext,
    sql: &str,
    typed_columns: &[String],
) -> Result<String, TaskError> {
    let frame = ctx.sql(sql).await?;
    let schema = frame.schema().as_arrow().clone();
    let (candidates, aggregates) = candidates(&schema, typed_columns);
    if candidates.is_empty() {
        return Ok(sql.to_string());
    }
    // Each value to aggregate is named in a projection first: DataFusion names a cast as the
    // column it casts, so `count(c)` and `count(try_cast(c as date))` would share a name.
    let (values, counted): (Vec<String>, Vec<String>) = aggregates
        .iter()
        .enumerate()
        .map(|(index, (value, aggregate))| {
            (
                format!("{value} as v{index}"),
                format!("{aggregate}(v{index}) as a{index}"),
            )
        })
        .unzip();
    let batches = ctx
        .sql(&format!(
            "select {} from (select {} from ({sql}) as seed) as seed_values",
            counted.join(", "),
            values.join(", ")
        ))
        .await?
        .collect()
        .await?;
    let Some(bounds) = batches.first() else {
        return Ok(sql.to_string());
    };
    let columns: Vec<String> = schema
        .fields()
        .iter()
        .map(|field| {
            let name = quote(field.name());
            let retype = candidates
                .iter()
                .find(|candidate| candidate.name == field.name())
                .map_or(Retype::Keep, |candidate| decide(candidate, bounds));
            match retype {
                Retype::Keep => name,
                Retype::Int32 => format!("cast({name} as int) as {name}"),
                Retype::Timestamp => format!("cast({name} as timestamp) as {name}"),
                Retype::Date => format!("cast({name} as date) as {name}"),
            }
        })
        .collect();
    Ok(format!(
        "select {} from ({sql}) as seed",
        columns.join(", ")
    ))
}

/// The columns whose type depends on their values, and the values and aggregate functions
/// of the bounds query.
fn candidates<'a>(
    schema: &'a Schema,
    typed_columns: &[String],
) -> (Vec<Candidate<'a>>, Vec<(String, &'static str)>) {
    let mut candidates = Vec::new();
    let mut aggregates = Vec::new();
    for field in schema.fields() {
        let name = field.name();
        if typed_columns
            .iter()
            .any(|typed| typed.eq_ignore_ascii_case(name))
        {
            continue;
        }
        let column = quote(name);
        let first = aggregates.len();
        let kind = match field.data_type() {
            DataType::Int64 => {
                aggregates.extend([(column.clone(), "min"), (column.clone(), "max")]);
                CandidateKind::Wide
            }
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                aggregates.extend([
                    (column.clone(), "count"),
                    (format!("try_cast({column} as timestamp)"), "count"),
                    (format!("try_cast({column} as date)"), "count"),
                    (format!("case when {column} like '%:%' then 1 end"), "count"),
                ]);
                CandidateKind::Text
            }
            _ => continue,
        };
        candidates.push(Candidate { name, first, kind });
    }
    (candidates, aggregates)
}

/// The type a candidate column takes, from its aggregates in `bounds`.
fn decide(candidate: &Candidate<'_>, bounds: &RecordBatch) -> Retype {
    let value = |offset: usize| -> Option<i64> {
        let column = bounds.column(candidate.first + offset);
        let values = column.as_any().downcast_ref::<Int64Array>()?;
        (!values.is_null(0)).then(|| values.value(0))
    };
    match candidate.kind {
        CandidateKind::Wide => {
            let fits = |offset| value(offset).is_none_or(|bound| i32::try_from(bound).is_ok());
            if fits(0) && fits(1) {
                Retype::Int32
            } else {
                Retype::Keep
            }
        }
        CandidateKind::Text => {
            let (Some(values), Some(timestamps), Some(dates), Some(with_time)) =
                (value(0), value(1), value(2), value(3))
            else {
                return Retype::Keep;
            };
            if values == 0 {
                Retype::Keep
            } else if timestamps == values && with_time == values {
                Retype::Timestamp
            } else if dates == values && with_time == 0 {
                Retype::Date
            } else {
                Retype::Keep
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `table_sql` run in `ctx`, then the seed's retyped SQL over the table: its batches.
    async fn retyped(ctx: &SessionContext, table_sql: &str, typed: &[String]) -> Vec<RecordBatch> {
        ctx.sql(table_sql)
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        let sql = seed_sql(ctx, "select * from s", typed)
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        ctx.sql(&sql)
            .await
            .unwrap_or_else(|err| panic!("{err}"))
            .collect()
            .await
            .unwrap_or_else(|err| panic!("{err}"))
    }

    fn types(batches: &[RecordBatch]) -> Vec<DataType> {
        batches[0]
            .schema()
            .fields()
            .iter()
            .map(|field| field.data_type().clone())
            .collect()
    }

    #[tokio::test]
    async fn whole_numbers_that_fit_become_32_bit() {
        let batches = retyped(
            &SessionContext::new(),
            "create table s as select * from (values (1, 5000000000, 2.5, 7), (2, 1, 1.0, 8)) \
             as t(small, large, ratio, typed)",
            &[String::from("TYPED")],
        )
        .await;
        assert_eq!(
            types(&batches),
            [
                DataType::Int32,
                DataType::Int64,
                DataType::Float64,
                DataType::Int64
            ]
        );
    }

    /// Text that DuckDB reads as timestamps or dates — one-digit fields included, which Arrow's
    /// CSV inference leaves as text — becomes `timestamp` or `date`; text mixing both, or
    /// holding anything else, stays text.
    #[tokio::test]
    async fn text_of_timestamps_or_dates_becomes_temporal() {
        let (ctx, _pool) = strata_engine::session(&strata_engine::EngineConfig::default())
            .unwrap_or_else(|err| panic!("{err}"));
        let batches = retyped(
            &ctx,
            "create table s as select * from (values \
             ('2024-12-30 3:15:52', '2024-1-5', '10:15 a', '2024-1-5', null), \
             ('2024-12-31 13:15:52', '2024-10-15', 'b', '2024-01-05 1:00:00', null)) \
             as t(at, day, label, mixed, empty)",
            &[],
        )
        .await;
        let types = types(&batches);
        assert!(
            matches!(types[0], DataType::Timestamp(_, None)),
            "{types:?}"
        );
        assert_eq!(types[1], DataType::Date32, "{types:?}");
        for text in &types[2..4] {
            assert!(
                matches!(text, DataType::Utf8 | DataType::Utf8View),
                "{types:?}"
            );
        }
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap_or_else(|err| panic!("{err}"))
            .to_string();
        assert!(text.contains("2024-12-30T03:15:52"), "{text}");
        assert!(text.contains("2024-01-05"), "{text}");
    }
}
