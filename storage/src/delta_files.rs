//! How Strata writes the Parquet files of Delta tables: the Arrow types Delta can store and
//! the Parquet writer's properties, shared by the workers and the ingest agent.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// Maps types Delta cannot store onto the closest type it can: nanosecond timestamps to
/// microseconds, string and binary views to plain arrays, unsigned integers to wider signed
/// ones, the null type to strings; inside structs and lists too. Every column is nullable.
pub fn delta_compatible(schema: &Schema) -> SchemaRef {
    fn map(data_type: &DataType) -> DataType {
        match data_type {
            DataType::Timestamp(_, zone) => {
                DataType::Timestamp(TimeUnit::Microsecond, zone.clone())
            }
            DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
            DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
            DataType::UInt8 => DataType::Int16,
            DataType::UInt16 => DataType::Int32,
            DataType::UInt32 | DataType::UInt64 => DataType::Int64,
            DataType::Float16 => DataType::Float32,
            DataType::Null => DataType::Utf8,
            DataType::Date64 => DataType::Date32,
            DataType::Time32(_) | DataType::Time64(_) => DataType::Utf8,
            DataType::Dictionary(_, value) => map(value),
            DataType::Struct(fields) => DataType::Struct(fields.iter().map(nullable).collect()),
            DataType::List(item) | DataType::LargeList(item) | DataType::ListView(item) => {
                DataType::List(nullable(item))
            }
            other => other.clone(),
        }
    }
    fn nullable(field: &Arc<Field>) -> Arc<Field> {
        Arc::new(Field::new(field.name(), map(field.data_type()), true))
    }
    Arc::new(Schema::new(
        schema.fields().iter().map(nullable).collect::<Vec<_>>(),
    ))
}

/// Why a column of `schema` cannot be stored in a Delta table even after
/// [`delta_compatible`], with what to write instead: durations (`timestamp - timestamp`) and
/// intervals, which Delta has no type for (Spark refuses them too). `None` when every column
/// can be stored.
pub fn unstorable_columns(schema: &Schema) -> Option<String> {
    fn unstorable(data_type: &DataType) -> bool {
        match data_type {
            DataType::Duration(_) | DataType::Interval(_) => true,
            DataType::Struct(fields) => fields.iter().any(|field| unstorable(field.data_type())),
            DataType::List(item) | DataType::LargeList(item) | DataType::ListView(item) => {
                unstorable(item.data_type())
            }
            DataType::Dictionary(_, value) => unstorable(value),
            _ => false,
        }
    }
    let columns: Vec<String> = schema
        .fields()
        .iter()
        .filter(|field| unstorable(field.data_type()))
        .map(|field| format!("'{}' ({})", field.name(), field.data_type()))
        .collect();
    (!columns.is_empty()).then(|| {
        format!(
            "column(s) {} hold a duration or interval (what `timestamp - timestamp` gives), which a Delta table cannot store; store a number instead, e.g. date_diff('second', start, end) or extract(epoch from end - start)",
            columns.join(", ")
        )
    })
}

/// The Parquet writer's properties: zstd, row groups of at most a million rows.
pub fn writer_properties() -> datafusion::parquet::file::properties::WriterProperties {
    use datafusion::parquet::basic::{Compression, ZstdLevel};
    datafusion::parquet::file::properties::WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(1 << 20))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_intervals_are_named_as_unstorable() {
        use datafusion::arrow::datatypes::IntervalUnit;
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("lead_time", DataType::Duration(TimeUnit::Microsecond), true),
            Field::new("span", DataType::Interval(IntervalUnit::MonthDayNano), true),
        ]);
        let message = unstorable_columns(&schema).unwrap();
        assert!(
            message.contains("'lead_time' (Duration(µs))") && message.contains("'span'"),
            "{message}"
        );
        let plain = Schema::new(vec![Field::new("id", DataType::Int64, true)]);
        assert_eq!(unstorable_columns(&plain), None);
    }
}
