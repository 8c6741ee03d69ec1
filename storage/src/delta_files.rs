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

/// The Parquet writer's properties: zstd, row groups of at most a million rows.
pub fn writer_properties() -> datafusion::parquet::file::properties::WriterProperties {
    use datafusion::parquet::basic::{Compression, ZstdLevel};
    datafusion::parquet::file::properties::WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(1 << 20))
        .build()
}
