//! Casts of text to timestamps and dates that accept what DuckDB accepts: `2024-12-30 3:15:52`
//! (a one-digit hour), `2024-1-5` (one-digit month and day). Arrow's parser wants two digits
//! everywhere, so a dbt project whose seeds or sources hold such values — vendors' exports
//! often do — fails in Strata where dbt-duckdb reads them.
//!
//! An analyzer rule after type coercion turns `cast(text as timestamp|date)` into
//! `strata_cast_temporal(text, <typed null>)` (`strata_try_cast_temporal` for `try_cast`). The
//! function casts with Arrow first; only the values Arrow refuses are padded and cast again,
//! so well-formed text costs what it did and messy text little more. The typed null carries the
//! target type, so the functions are stateless and travel in shuffled plans by name.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringArray};
use datafusion::arrow::compute::kernels::zip::zip;
use datafusion::arrow::compute::{CastOptions, cast_with_options, is_not_null};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, Result, ScalarValue};
use datafusion::logical_expr::expr::{Cast, ScalarFunction, TryCast};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ExprSchemable, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;

/// The function of `cast(text as …)`.
pub const CAST_TEMPORAL: &str = "strata_cast_temporal";
/// The function of `try_cast(text as …)`: NULL where the text is no timestamp.
pub const TRY_CAST_TEMPORAL: &str = "strata_try_cast_temporal";

/// Rewrites casts of text to timestamps and dates (see the module documentation).
#[derive(Debug, Default)]
pub struct LenientTemporalCasts;

impl AnalyzerRule for LenientTemporalCasts {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        plan.transform_up_with_subqueries(|plan| crate::division::rewrite_plan(plan, lenient))
            .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "lenient_temporal_casts"
    }
}

/// `cast(text as timestamp|date)` as the lenient function.
fn lenient(expr: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
    let (inner, target, name) = match &expr {
        Expr::Cast(Cast { expr, field }) => (expr, field.data_type(), CAST_TEMPORAL),
        Expr::TryCast(TryCast { expr, field }) => (expr, field.data_type(), TRY_CAST_TEMPORAL),
        _ => return Ok(Transformed::no(expr)),
    };
    let text = inner
        .get_type(schema)
        .is_ok_and(|data_type| is_text(&data_type));
    if !is_temporal(target) || !text {
        return Ok(Transformed::no(expr));
    }
    let function = Arc::new(ScalarUDF::new_from_impl(TemporalCast::new(name)));
    let typed_null = Expr::Literal(ScalarValue::try_from(target)?, None);
    Ok(Transformed::yes(Expr::ScalarFunction(
        ScalarFunction::new_udf(function, vec![inner.as_ref().clone(), typed_null]),
    )))
}

fn is_temporal(data_type: &DataType) -> bool {
    matches!(data_type, DataType::Timestamp(_, _) | DataType::Date32)
}

fn is_text(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

/// The two functions: a text to the type of the second argument.
pub fn lenient_cast_functions() -> Vec<ScalarUDF> {
    [CAST_TEMPORAL, TRY_CAST_TEMPORAL]
        .into_iter()
        .map(|name| ScalarUDF::new_from_impl(TemporalCast::new(name)))
        .collect()
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct TemporalCast {
    name: &'static str,
    signature: Signature,
}

impl TemporalCast {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for TemporalCast {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(arg_types.get(1).cloned().unwrap_or(DataType::Null))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let target = args.return_field.data_type().clone();
        let values = args.args[0].to_array(args.number_rows)?;
        let safe = CastOptions::default();
        let first = cast_with_options(&values, &target, &safe)?;
        if first.null_count() == values.null_count() {
            return Ok(ColumnarValue::Array(first));
        }
        // Only the values Arrow refused (present, yet NULL after the cast) are padded and
        // tried again.
        let retried = cast_with_options(&padded_where_refused(&values, &first)?, &target, &safe)?;
        let merged = zip(&is_not_null(&first)?, &first, &retried)?;
        if self.name == CAST_TEMPORAL && merged.null_count() != values.null_count() {
            // A cast fails on text that is no timestamp: Arrow's own error for the first.
            let refused = (0..values.len())
                .find(|&row| values.is_valid(row) && merged.is_null(row))
                .unwrap_or_default();
            let strict = CastOptions {
                safe: false,
                ..CastOptions::default()
            };
            cast_with_options(&values.slice(refused, 1), &target, &strict)?;
        }
        Ok(ColumnarValue::Array(merged))
    }
}

/// The values `cast` refused with their one-digit date and time fields padded; NULL elsewhere.
fn padded_where_refused(values: &ArrayRef, cast: &ArrayRef) -> Result<ArrayRef> {
    let text = cast_with_options(values, &DataType::Utf8, &CastOptions::default())?;
    let text = text.as_string::<i32>();
    let padded: StringArray = (0..text.len())
        .map(|row| (text.is_valid(row) && cast.is_null(row)).then(|| pad_fields(text.value(row))))
        .collect();
    Ok(Arc::new(padded) as ArrayRef)
}

/// `2024-1-5 3:4:52.5` → `2024-01-05 03:04:52.5`: each one-digit field of the date and of the
/// time's hours, minutes and seconds gets a leading zero; the rest (fractions, zones) is kept.
fn pad_fields(value: &str) -> String {
    let value = value.trim();
    let (date, rest) = match value.find([' ', 'T']) {
        Some(at) => (&value[..at], &value[at..]),
        None => (value, ""),
    };
    let mut out = String::with_capacity(value.len() + 4);
    out.push_str(&pad_each(date, '-', 3));
    if let Some(separator) = rest.chars().next() {
        out.push(separator);
        let time = &rest[separator.len_utf8()..];
        // The clock is the leading run of digits and colons; a fraction or zone follows it.
        let clock_end = time
            .find(|c: char| !(c.is_ascii_digit() || c == ':'))
            .unwrap_or(time.len());
        out.push_str(&pad_each(&time[..clock_end], ':', 3));
        out.push_str(&time[clock_end..]);
    }
    out
}

/// The first `fields` fields of `text` split by `separator`, one-digit ones padded to two.
fn pad_each(text: &str, separator: char, fields: usize) -> String {
    text.split(separator)
        .enumerate()
        .map(|(index, field)| {
            let one_digit = field.len() == 1 && field.as_bytes()[0].is_ascii_digit();
            if index < fields && one_digit {
                format!("0{field}")
            } else {
                field.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(&separator.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{EngineConfig, session};

    async fn rows(sql: &str) -> String {
        let (ctx, _) = session(&EngineConfig::default()).unwrap();
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string()
    }

    #[test]
    fn one_digit_fields_are_padded_and_the_rest_kept() {
        assert_eq!(pad_fields("2024-12-30 3:15:52"), "2024-12-30 03:15:52");
        assert_eq!(pad_fields("2024-1-5"), "2024-01-05");
        assert_eq!(
            pad_fields("2024-1-5T3:4:5.25+01:00"),
            "2024-01-05T03:04:05.25+01:00"
        );
        assert_eq!(pad_fields("2024-12-30 13:15:52"), "2024-12-30 13:15:52");
        assert_eq!(pad_fields("not a time"), "not a time");
    }

    #[tokio::test]
    async fn text_casts_to_timestamps_and_dates_as_duckdb_reads_it() {
        let out = rows(
            "select cast(t as timestamp) as ts, cast(d as date) as day,
                    try_cast(bad as timestamp) as nothing, cast(ok as timestamp) as plain
             from (values ('2024-12-30 3:15:52', '2024-1-5', 'soon', '2024-12-30 13:15:52'))
                  as v(t, d, bad, ok)",
        )
        .await;
        assert!(out.contains("2024-12-30T03:15:52"), "{out}");
        assert!(out.contains("2024-01-05"), "{out}");
        assert!(out.contains("2024-12-30T13:15:52"), "{out}");
        // The column keeps the name the SQL gives it.
        assert!(out.contains("| ts "), "{out}");
    }

    #[tokio::test]
    async fn only_refused_values_are_retried_in_a_mixed_column() {
        let out = rows(
            "select try_cast(t as timestamp) as ts from (values ('2024-12-30 13:15:52'),
                    ('2024-12-30 3:15:52'), ('never'), (null)) as v(t) order by ts nulls last",
        )
        .await;
        assert!(out.contains("2024-12-30T03:15:52"), "{out}");
        assert!(out.contains("2024-12-30T13:15:52"), "{out}");
        let counted = rows(
            "select count(try_cast(t as timestamp)) as n from (values ('2024-12-30 13:15:52'),
                    ('2024-12-30 3:15:52'), ('never'), (null)) as v(t)",
        )
        .await;
        assert!(
            counted.contains("| 2 "),
            "the bad value and the NULL stay NULL: {counted}"
        );
        let (ctx, _) = session(&EngineConfig::default()).unwrap();
        let failed = ctx
            .sql("select cast(t as timestamp) as ts from (values ('2024-12-30 3:15:52'), ('never')) as v(t)")
            .await
            .unwrap()
            .collect()
            .await;
        let message = failed.unwrap_err().to_string();
        assert!(message.contains("never"), "{message}");
    }

    #[tokio::test]
    async fn text_that_is_no_timestamp_still_fails_a_cast() {
        let (ctx, _) = session(&EngineConfig::default()).unwrap();
        let failed = ctx
            .sql("select cast('soon' as timestamp) as ts")
            .await
            .unwrap()
            .collect()
            .await;
        assert!(failed.is_err());
    }
}
