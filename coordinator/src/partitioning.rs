//! Partition-aligned planning: a model that is row-wise (projections and filters, no
//! aggregation, join, window, sort, limit or subquery) over a single multi-file source needs no
//! data from other files, so it runs as one task per group of input files, in parallel, and
//! the coordinator commits all their files in the model's single transaction. Files are listed
//! with [`strata_storage::list_files`], so sources on S3 split as local ones do.

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::prelude::{CsvReadOptions, JsonReadOptions, ParquetReadOptions, SessionContext};

/// True when every operator of the plan is row-wise over its input.
fn is_row_wise(plan: &LogicalPlan) -> bool {
    let mut row_wise = true;
    let _ = plan.apply(|node| {
        let allowed = matches!(
            node,
            LogicalPlan::Projection(_)
                | LogicalPlan::Filter(_)
                | LogicalPlan::SubqueryAlias(_)
                | LogicalPlan::TableScan(_)
        );
        let subquery = node.expressions().iter().any(|expr| {
            expr.exists(|e| {
                Ok(matches!(
                    e,
                    Expr::ScalarSubquery(_) | Expr::InSubquery(_) | Expr::Exists(_)
                ))
            })
            .unwrap_or(true)
        });
        if !allowed || subquery {
            row_wise = false;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    row_wise
}

/// Decides whether `sql`, reading only the source registered as `schema.name` from `files`
/// in `format`, is row-wise. Planning needs the files' schema, so a broken input answers
/// "no" and the model runs as one task (which then reports the real error).
pub async fn row_wise_over(
    sql: &str,
    schema: &str,
    name: &str,
    first_file: &str,
    format: &str,
) -> bool {
    let ctx = SessionContext::new();
    if strata_storage::register(&ctx, first_file).is_err() {
        return false;
    }
    let Some(catalog) = ctx.catalog("datafusion") else {
        return false;
    };
    if catalog.schema(schema).is_none()
        && catalog
            .register_schema(
                schema,
                std::sync::Arc::new(datafusion::catalog::MemorySchemaProvider::new()),
            )
            .is_err()
    {
        return false;
    }
    let reference = format!("\"{schema}\".\"{name}\"");
    let registered = match format {
        "parquet" => {
            ctx.register_parquet(&reference, first_file, ParquetReadOptions::default())
                .await
        }
        "csv" => {
            ctx.register_csv(
                &reference,
                first_file,
                CsvReadOptions::default().file_extension(""),
            )
            .await
        }
        "json" => {
            ctx.register_json(
                &reference,
                first_file,
                JsonReadOptions::default().file_extension(""),
            )
            .await
        }
        _ => return false,
    };
    if registered.is_err() {
        return false;
    }
    match ctx.sql(sql).await {
        Ok(frame) => is_row_wise(frame.logical_plan()),
        Err(_) => false,
    }
}

/// Splits files into at most `groups` groups of consecutive files with balanced counts.
pub fn group_files(files: &[String], groups: usize) -> Vec<Vec<String>> {
    let groups = groups.clamp(1, files.len().max(1));
    let per_group = files.len().div_ceil(groups);
    files
        .chunks(per_group.max(1))
        .map(<[String]>::to_vec)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_balanced_and_cover_every_file() {
        let files: Vec<String> = (0..7).map(|i| format!("f{i}")).collect();
        let groups = group_files(&files, 3);
        assert_eq!(groups.len(), 3);
        assert_eq!(groups.concat(), files);
        assert_eq!(group_files(&files, 100).len(), 7);
    }

    #[tokio::test]
    async fn only_row_wise_sql_qualifies() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.csv");
        std::fs::write(&file, "id,v\n1,2\n").unwrap();
        let file = file.display().to_string();
        let row_wise = "select id, v * 2 as w, current_timestamp as t from raw.events where v > 0";
        assert!(row_wise_over(row_wise, "raw", "events", &file, "csv").await);
        for sql in [
            "select id, count(*) from raw.events group by id",
            "select * from raw.events order by id",
            "select *, row_number() over (order by id) from raw.events",
            "select * from raw.events where id in (select id from raw.events)",
            "select * from raw.events limit 1",
        ] {
            assert!(
                !row_wise_over(sql, "raw", "events", &file, "csv").await,
                "{sql}"
            );
        }
    }
}
