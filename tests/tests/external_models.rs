//! dbt-duckdb's `materialized: external`: the model's table is built and its rows are also
//! written as one file at `location` (Parquet, CSV or newline-delimited JSON), read back here
//! with DataFusion and compared with the seed they came from.

use std::path::Path;
use std::process::ExitCode;

use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::{CsvReadOptions, JsonReadOptions, ParquetReadOptions, SessionContext};
use strata_tests::strata;

const ORDERS: &str =
    "id,amount,note\n1,10.5,plain\n2,20.25,\"with, comma\"\n3,30,\"say \"\"hi\"\"\"\n";

fn write(project: &Path, path: &str, text: &str) {
    let path = project.join(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// The rows of a query as sorted table lines, without the header.
async fn rows(ctx: &SessionContext, sql: &str) -> Vec<String> {
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let shown = pretty_format_batches(&batches).unwrap().to_string();
    let mut lines: Vec<String> = shown
        .lines()
        .skip(3)
        .filter(|line| line.starts_with('|'))
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

#[test]
fn external_models_write_their_rows_to_one_file_in_each_format() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("exports");
    write(&project, "dbt_project.yml", "name: exports\n");
    write(&project, "seeds/orders.csv", ORDERS);
    write(
        &project,
        "models/orders_parquet.sql",
        "{{ config(materialized='external') }}\nselect * from {{ ref('orders') }}\n",
    );
    write(
        &project,
        "models/orders_csv.sql",
        "{{ config(materialized='external', location='out/nested/orders.csv', delimiter='|') }}\n\
         select * from {{ ref('orders') }}\n",
    );
    write(
        &project,
        "models/orders_json.sql",
        "{{ config(materialized='external', format='json', location='out/orders.ndjson') }}\n\
         select * from {{ ref('orders') }}\n",
    );
    write(
        &project,
        "models/no_orders.sql",
        "{{ config(materialized='external', location='out/empty.parquet') }}\n\
         select * from {{ ref('orders') }} where id < 0\n",
    );
    // Downstream models read the table, as dbt-duckdb's read its view over the file.
    write(
        &project,
        "models/order_count.sql",
        "select count(*) as orders from {{ ref('orders_parquet') }}\n",
    );
    let code = strata(&["build", "--project-dir", project.to_str().unwrap()]);
    assert_eq!(code, ExitCode::SUCCESS);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let ctx = SessionContext::new();
        let file = |path: &str| project.join(path).display().to_string();
        ctx.register_csv(
            "seed",
            &file("seeds/orders.csv"),
            CsvReadOptions::new().has_header(true),
        )
        .await
        .unwrap();
        ctx.register_parquet(
            "parquet",
            &file("orders_parquet.parquet"),
            ParquetReadOptions::default(),
        )
        .await
        .unwrap();
        ctx.register_csv(
            "csv",
            &file("out/nested/orders.csv"),
            CsvReadOptions::new().has_header(true).delimiter(b'|'),
        )
        .await
        .unwrap();
        ctx.register_json(
            "json",
            &file("out/orders.ndjson"),
            JsonReadOptions::default().file_extension(".ndjson"),
        )
        .await
        .unwrap();
        ctx.register_parquet(
            "empty",
            &file("out/empty.parquet"),
            ParquetReadOptions::default(),
        )
        .await
        .unwrap();
        let seed = rows(&ctx, "select id, amount, note from seed").await;
        assert_eq!(seed.len(), 3, "{seed:?}");
        for table in ["parquet", "csv", "json"] {
            let exported = rows(&ctx, &format!("select id, amount, note from {table}")).await;
            assert_eq!(exported, seed, "{table}");
        }
        let empty = ctx.table("empty").await.unwrap();
        let columns: Vec<String> = empty
            .schema()
            .fields()
            .iter()
            .map(|field| field.name().clone())
            .collect();
        assert_eq!(columns, ["id", "amount", "note"]);
        assert_eq!(empty.count().await.unwrap(), 0);
    });
}
