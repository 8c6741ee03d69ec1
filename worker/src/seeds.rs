//! Seeds typed as dbt-duckdb types them: a column of whole numbers is a 32-bit `integer`
//! (dbt's type for agate's integral numbers), where DataFusion's CSV inference says 64-bit.
//! A column whose values do not fit in 32 bits stays 64-bit rather than failing the load;
//! columns typed by `column_types` are left as the user typed them.

use datafusion::arrow::array::{Array, Int64Array};
use datafusion::arrow::datatypes::DataType;
use datafusion::prelude::SessionContext;
use strata_engine::TaskError;
use strata_engine::identifiers::quoted as quote;

/// The seed's SQL with each 64-bit integer column that fits in 32 bits cast to `int`.
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
    let wide: Vec<&String> = schema
        .fields()
        .iter()
        .filter(|field| field.data_type() == &DataType::Int64)
        .map(|field| field.name())
        .filter(|name| {
            !typed_columns
                .iter()
                .any(|typed| typed.eq_ignore_ascii_case(name))
        })
        .collect();
    if wide.is_empty() {
        return Ok(sql.to_string());
    }
    let bounds: Vec<String> = wide
        .iter()
        .flat_map(|name| {
            [
                format!("min({})", quote(name)),
                format!("max({})", quote(name)),
            ]
        })
        .collect();
    let batches = ctx
        .sql(&format!(
            "select {} from ({sql}) as seed",
            bounds.join(", ")
        ))
        .await?
        .collect()
        .await?;
    let fits = |index: usize| -> bool {
        batches.first().is_some_and(|batch| {
            [2 * index, 2 * index + 1].iter().all(|&column| {
                batch
                    .column(column)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .is_some_and(|values| {
                        values.is_null(0) || i32::try_from(values.value(0)).is_ok()
                    })
            })
        })
    };
    let narrow: Vec<&String> = wide
        .iter()
        .enumerate()
        .filter(|(index, _)| fits(*index))
        .map(|(_, name)| *name)
        .collect();
    let columns: Vec<String> = schema
        .fields()
        .iter()
        .map(|field| {
            let name = quote(field.name());
            if narrow.contains(&field.name()) {
                format!("cast({name} as int) as {name}")
            } else {
                name
            }
        })
        .collect();
    Ok(format!(
        "select {} from ({sql}) as seed",
        columns.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn whole_numbers_that_fit_become_32_bit() {
        let ctx = SessionContext::new();
        ctx.sql(
            "create table s as select * from (values (1, 5000000000, 2.5, 7), (2, 1, 1.0, 8)) \
             as t(small, large, ratio, typed)",
        )
        .await
        .unwrap_or_else(|err| panic!("{err}"));
        let sql = seed_sql(&ctx, "select * from s", &[String::from("TYPED")])
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        let schema = ctx
            .sql(&sql)
            .await
            .unwrap_or_else(|err| panic!("{err}"))
            .schema()
            .as_arrow()
            .clone();
        let types: Vec<String> = schema
            .fields()
            .iter()
            .map(|field| field.data_type().to_string())
            .collect();
        assert_eq!(types, ["Int32", "Int64", "Float64", "Int64"]);
    }
}
