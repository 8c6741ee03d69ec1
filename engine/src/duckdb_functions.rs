//! DuckDB functions that dbt-duckdb projects commonly call, planned as the DataFusion
//! expressions they stand for: `strftime(ts, format)` (DataFusion's `to_char` takes the same
//! chrono formats), `epoch_ms(ms)`, and `date_diff(part, start, end)` / `datediff(...)`
//! (boundaries crossed, as DuckDB counts them).
//!
//! Each is a scalar function whose `simplify` replaces the call by the expression, so it costs
//! nothing at run time; the optimizer always simplifies before execution.

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, cast,
    lit,
};

/// The DuckDB functions Strata adds to every session.
pub fn duckdb_functions() -> Vec<ScalarUDF> {
    [
        DuckDbFunction::new("strftime", 2, Function::Strftime),
        DuckDbFunction::new("epoch_ms", 1, Function::EpochMs),
        DuckDbFunction::new("date_diff", 3, Function::DateDiff),
        DuckDbFunction::new("datediff", 3, Function::DateDiff),
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

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(match self.function {
            Function::Strftime => DataType::Utf8,
            Function::EpochMs => DataType::Timestamp(TimeUnit::Millisecond, None),
            Function::DateDiff => DataType::Int64,
        })
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        exec_err!("{}() runs as the expression it is simplified to", self.name)
    }

    fn simplify(&self, args: Vec<Expr>, _info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        let expr = match (self.function, args.as_slice()) {
            (Function::Strftime, [value, format]) => {
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
}
