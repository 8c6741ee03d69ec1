//! DuckDB functions that dbt-duckdb projects commonly call, planned as the DataFusion
//! expressions they stand for: `strftime(ts, format)` (or `(format, ts)`, as DuckDB also
//! takes it) and `strptime(text, format)` (DataFusion's `to_char` / `to_timestamp` take the
//! same chrono formats), `epoch_ms(ms)`,
//! `epoch(ts)`, `date_diff(part, start, end)` / `datediff(...)` (boundaries crossed, as
//! DuckDB counts them), `dayofweek`, `dayofyear`, `last_day`, `regexp_matches(text,
//! pattern)`, the aggregates `count_if(cond)`, `listagg(text, sep)`, `max_by(value, key)` and
//! `min_by(value, key)`, and Snowflake's
//! `iff(cond, a, b)`, which
//! projects moved from Snowflake keep.
//!
//! Each is a function whose `simplify` replaces the call by the expression, so it costs
//! nothing at run time; the optimizer always simplifies before execution.

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, AggregateFunctionSimplification};
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, Expr, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, Volatility, cast, lit,
};

/// The DuckDB functions Strata adds to every session.
pub fn duckdb_functions() -> Vec<ScalarUDF> {
    [
        DuckDbFunction::new("strftime", 2, Function::Strftime),
        DuckDbFunction::new("epoch_ms", 1, Function::EpochMs),
        DuckDbFunction::new("date_diff", 3, Function::DateDiff),
        DuckDbFunction::new("datediff", 3, Function::DateDiff),
        DuckDbFunction::new("strptime", 2, Function::Strptime),
        DuckDbFunction::new("epoch", 1, Function::Epoch),
        DuckDbFunction::new("dayofweek", 1, Function::DayOfWeek),
        DuckDbFunction::new("dayofyear", 1, Function::DayOfYear),
        DuckDbFunction::new("last_day", 1, Function::LastDay),
        DuckDbFunction::new("iff", 3, Function::Iff),
        DuckDbFunction::new("regexp_matches", 2, Function::RegexpMatches),
    ]
    .into_iter()
    .map(ScalarUDF::new_from_impl)
    .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Function {
    Strftime,
    EpochMs,
    DateDiff,
    Strptime,
    Epoch,
    DayOfWeek,
    DayOfYear,
    LastDay,
    Iff,
    RegexpMatches,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct DuckDbFunction {
    name: &'static str,
    signature: Signature,
    function: Function,
}

impl DuckDbFunction {
    fn new(name: &'static str, arguments: usize, function: Function) -> Self {
        Self {
            name,
            signature: Signature::any(arguments, Volatility::Immutable),
            function,
        }
    }
}

impl ScalarUDFImpl for DuckDbFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(match self.function {
            Function::Strftime => DataType::Utf8,
            Function::EpochMs => DataType::Timestamp(TimeUnit::Millisecond, None),
            Function::DateDiff | Function::DayOfWeek | Function::DayOfYear => DataType::Int64,
            Function::Strptime => DataType::Timestamp(TimeUnit::Microsecond, None),
            Function::Epoch => DataType::Float64,
            Function::LastDay => DataType::Date32,
            Function::Iff => arg_types.get(1).cloned().unwrap_or(DataType::Null),
            Function::RegexpMatches => DataType::Boolean,
        })
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        exec_err!("{}() runs as the expression it is simplified to", self.name)
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        use datafusion::functions::expr_fn::{date_part, date_trunc, regexp_like, to_timestamp};
        let timestamp =
            |e: &Expr| cast(e.clone(), DataType::Timestamp(TimeUnit::Microsecond, None));
        let expr = match (self.function, args.as_slice()) {
            (Function::Strptime, [text, format]) => cast(
                to_timestamp(vec![text.clone(), format.clone()]),
                DataType::Timestamp(TimeUnit::Microsecond, None),
            ),
            (Function::Epoch, [value]) => {
                cast(date_part(lit("epoch"), timestamp(value)), DataType::Float64)
            }
            (Function::DayOfWeek, [value]) => {
                cast(date_part(lit("dow"), timestamp(value)), DataType::Int64)
            }
            (Function::DayOfYear, [value]) => {
                cast(date_part(lit("doy"), timestamp(value)), DataType::Int64)
            }
            (Function::LastDay, [value]) => {
                // The first of the month, one month on, one day back.
                let next_month = ScalarValue::new_interval_mdn(1, -1, 0);
                cast(
                    date_trunc(lit("month"), timestamp(value)) + lit(next_month),
                    DataType::Date32,
                )
            }
            (Function::Iff, [condition, then, otherwise]) => {
                let data_type = info.get_data_type(then)?;
                datafusion::logical_expr::when(condition.clone(), then.clone())
                    .otherwise(cast(otherwise.clone(), data_type))?
            }
            (Function::RegexpMatches, [text, pattern]) => {
                regexp_like(text.clone(), pattern.clone(), None)
            }
            (Function::Strftime, [first, second]) => {
                // DuckDB takes (value, format) and (format, value).
                let (value, format) = if matches!(
                    info.get_data_type(first)?,
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                ) {
                    (second, first)
                } else {
                    (first, second)
                };
                datafusion::functions::expr_fn::to_char(value.clone(), format.clone())
            }
            (Function::EpochMs, [millis]) => {
                datafusion::functions::expr_fn::to_timestamp_millis(vec![millis.clone()])
            }
            (Function::DateDiff, [part, start, end]) => date_diff(part, start, end)?,
            _ => return plan_err!("{}(): wrong number of arguments", self.name),
        };
        Ok(ExprSimplifyResult::Simplified(expr))
    }
}

/// The DuckDB aggregates Strata adds to every session: `count_if`, `listagg` (DuckDB's and
/// Snowflake's name for `string_agg`, ordered with `order by` inside the call), `max_by` and
/// `min_by` (with DuckDB's `arg_max` / `arg_min`).
pub fn duckdb_aggregates() -> Vec<AggregateUDF> {
    vec![
        AggregateUDF::new_from_impl(CountIf {
            signature: Signature::any(1, Volatility::Immutable),
        }),
        datafusion::functions_aggregate::string_agg::string_agg_udaf()
            .as_ref()
            .clone()
            .with_aliases(["listagg"]),
        AggregateUDF::new_from_impl(ValueByKey::new(true)),
        AggregateUDF::new_from_impl(ValueByKey::new(false)),
    ]
}

/// `count_if(condition)`: the rows where the condition is true, planned as
/// `sum(case when condition then 1 when not condition then 0 end)`: NULL when no row has a
/// known condition (over no rows too), as DuckDB answers.
#[derive(Debug, PartialEq, Eq, Hash)]
struct CountIf {
    signature: Signature,
}

impl AggregateUDFImpl for CountIf {
    fn name(&self) -> &str {
        "count_if"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        exec_err!("count_if() runs as the sum it is simplified to")
    }

    fn simplify(&self) -> Option<AggregateFunctionSimplification> {
        Some(Box::new(|aggregate, _info| {
            let params = aggregate.params;
            let [condition] = params.args.as_slice() else {
                return plan_err!("count_if() takes one condition");
            };
            // Arguments are not coerced (any signature): `count_if(null)` is a boolean too.
            let condition = &cast(condition.clone(), DataType::Boolean);
            // A FILTER clause leaves its rows out of both branches (NULL: not summed).
            let (is_true, is_false) = match params.filter {
                Some(filter) => (
                    filter.as_ref().clone().and(condition.clone()),
                    filter
                        .as_ref()
                        .clone()
                        .and(std::ops::Not::not(condition.clone())),
                ),
                None => (condition.clone(), std::ops::Not::not(condition.clone())),
            };
            Ok(datafusion::functions_aggregate::expr_fn::sum(
                datafusion::logical_expr::when(is_true, lit(1_i64))
                    .when(is_false, lit(0_i64))
                    .end()?,
            ))
        }))
    }
}

/// `max_by(value, key)` / `min_by(value, key)` (DuckDB's, Spark's; `arg_max` / `arg_min`):
/// the value of the row with the largest (smallest) key, planned as
/// `first_value(value order by key desc|asc) filter (where key is not null)` — rows whose key
/// is NULL are ignored, and no such row gives NULL, as DuckDB answers. Among rows with the same
/// key the row is any of them, as in DuckDB.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ValueByKey {
    signature: Signature,
    /// `max_by` when true, `min_by` otherwise.
    largest: bool,
    aliases: Vec<String>,
}

impl ValueByKey {
    fn new(largest: bool) -> ValueByKey {
        let alias = if largest { "arg_max" } else { "arg_min" };
        ValueByKey {
            signature: Signature::any(2, Volatility::Immutable),
            largest,
            aliases: vec![alias.to_string()],
        }
    }
}

impl AggregateUDFImpl for ValueByKey {
    fn name(&self) -> &str {
        if self.largest { "max_by" } else { "min_by" }
    }

    fn aliases(&self) -> &[String] {
        &self.aliases
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types.first() {
            Some(value) => Ok(value.clone()),
            None => plan_err!("{}() takes a value and a key", self.name()),
        }
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        exec_err!(
            "{}() runs as the first_value it is simplified to",
            self.name()
        )
    }

    fn simplify(&self) -> Option<AggregateFunctionSimplification> {
        let (name, largest) = (self.name().to_string(), self.largest);
        Some(Box::new(move |aggregate, _info| {
            let params = aggregate.params;
            let [value, key] = params.args.as_slice() else {
                return plan_err!("{name}() takes a value and a key: {name}(value, key)");
            };
            let known = key.clone().is_not_null();
            let filter = match params.filter {
                Some(filter) => filter.as_ref().clone().and(known),
                None => known,
            };
            let order = datafusion::logical_expr::SortExpr::new(key.clone(), !largest, false);
            Ok(Expr::AggregateFunction(
                datafusion::logical_expr::expr::AggregateFunction::new_udf(
                    datafusion::functions_aggregate::first_last::first_value_udaf(),
                    vec![value.clone()],
                    false,
                    Some(Box::new(filter)),
                    vec![order],
                    None,
                ),
            ))
        }))
    }
}

/// `date_diff(part, start, end)`: how many `part` boundaries lie between the two.
fn date_diff(part: &Expr, start: &Expr, end: &Expr) -> Result<Expr> {
    use datafusion::functions::expr_fn::{date_part, date_trunc};
    let Expr::Literal(ScalarValue::Utf8(Some(part)), _) = part else {
        return plan_err!("date_diff(): the date part must be a literal such as 'day'");
    };
    let part = part.to_ascii_lowercase();
    let timestamp = |e: &Expr| cast(e.clone(), DataType::Timestamp(TimeUnit::Microsecond, None));
    let (start, end) = (timestamp(start), timestamp(end));
    // Simplification runs after type coercion: every operand is made Float64 here.
    let field = |name: &str, e: &Expr| cast(date_part(lit(name), e.clone()), DataType::Float64);
    let years = field("year", &end) - field("year", &start);
    let diff = match part.as_str() {
        "year" | "years" => years,
        "quarter" | "quarters" => {
            years * lit(4.0) + field("quarter", &end) - field("quarter", &start)
        }
        "month" | "months" => years * lit(12.0) + field("month", &end) - field("month", &start),
        "week" | "weeks" | "day" | "days" | "hour" | "hours" | "minute" | "minutes" | "second"
        | "seconds" => {
            let (unit, seconds) = match part.trim_end_matches('s') {
                "week" => ("day", 604_800.0),
                "day" => ("day", 86_400.0),
                "hour" => ("hour", 3_600.0),
                "minute" => ("minute", 60.0),
                _ => ("second", 1.0),
            };
            let epoch = |e: &Expr| field("epoch", &date_trunc(lit(unit), e.clone()));
            datafusion::functions::expr_fn::floor((epoch(&end) - epoch(&start)) / lit(seconds))
        }
        other => {
            return plan_err!(
                "date_diff(): unsupported date part '{other}'; use year, quarter, month, week, day, hour, minute or second"
            );
        }
    };
    Ok(cast(diff, DataType::Int64))
}

#[cfg(test)]
mod tests {
    use crate::session::{EngineConfig, session};

    #[tokio::test]
    async fn duckdb_functions_answer_as_duckdb() {
        let (ctx, _) = session(&EngineConfig::default()).unwrap();
        let sql = "select strftime(cast('2026-03-04 05:06:07' as timestamp), '%Y/%m') as month,
                          epoch_ms(86400000) as day_one,
                          date_diff('day', cast('2026-01-31 23:00:00' as timestamp), date '2026-02-02') as days,
                          datediff('month', date '2025-12-31', date '2026-01-01') as months,
                          date_diff('week', date '2026-01-01', date '2026-01-15') as weeks";
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        assert!(text.contains("2026/03"), "{text}");
        assert!(text.contains("1970-01-02T00:00:00"), "{text}");
        assert!(text.contains("| 2    | 1      | 2     |"), "{text}");
    }

    #[tokio::test]
    async fn more_duckdb_functions_answer_as_duckdb() {
        let (ctx, _) = session(&EngineConfig::default()).unwrap();
        let sql = "select strptime('2024-02-03 04:05:06', '%Y-%m-%d %H:%M:%S') as parsed,
                          strftime('%B', date '2024-02-03') as month_name,
                          epoch(timestamp '1970-01-02 00:00:00') as seconds,
                          dayofweek(date '2024-01-07') as sunday,
                          dayofyear(date '2024-02-01') as doy,
                          last_day(date '2024-02-10') as leap,
                          iff(1 > 2, 'yes', 'no') as answer,
                          regexp_matches('dbt-duckdb', 'duck') as found,
                          count_if(x > 1) as over_one,
                          count_if(x > 9) as none_over,
                          count_if(null) as unknown,
                          listagg(cast(x as varchar), '+' order by x desc) as joined,
                          max_by(name, score) as best,
                          min_by(name, score) as worst,
                          arg_max(name, score) filter (where x < 3) as best_of_two,
                          max_by(name, cast(null as int)) as no_key
                   from (values (1, 'a', 5), (2, 'b', 9), (3, 'c', null)) as t(x, name, score)";
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        for expected in [
            "2024-02-03T04:05:06",
            "| February   ",
            "| 86400.0 ",
            "| 0      ",
            "| 32  ",
            "2024-02-29",
            "| no     ",
            "| true  ",
            "| 2        | 0         |         | 3+2+1  | b    | a     | b           |        |",
        ] {
            assert!(text.contains(expected), "{expected} in {text}");
        }
    }
}
