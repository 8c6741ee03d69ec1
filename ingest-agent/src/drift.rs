//! Schema drift: fitting what a source sends now to the columns its bronze table has.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, new_null_array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};

use crate::spec::DriftPolicy;

/// Why a batch does not fit the table, in words for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriftError(pub String);

/// Fits `batch` to the table's data columns `current` (none for a table not created yet)
/// under `policy`: returns the batch with exactly the columns of the returned schema, which
/// is `current` or, under `append_new_columns`, `current` with the new columns after it.
///
/// # Errors
/// New or missing columns under `fail`, and a column whose type changed in a way that
/// loses data (a wider type into a narrower column, a nested type changing shape).
pub fn conform(
    batch: &RecordBatch,
    current: Option<&SchemaRef>,
    policy: DriftPolicy,
) -> Result<(RecordBatch, SchemaRef), DriftError> {
    let incoming = strata_storage::delta_files::delta_compatible(batch.schema().as_ref());
    let Some(current) = current else {
        let batch = cast_to(batch, &incoming)?;
        return Ok((batch, incoming));
    };
    let added: Vec<FieldRef> = incoming
        .fields()
        .iter()
        .filter(|field| current.field_with_name(field.name()).is_err())
        .cloned()
        .collect();
    let missing: Vec<&str> = current
        .fields()
        .iter()
        .filter(|field| incoming.field_with_name(field.name()).is_err())
        .map(|field| field.name().as_str())
        .collect();
    if policy == DriftPolicy::Fail && (!added.is_empty() || !missing.is_empty()) {
        let names = |fields: Vec<&str>| fields.join(", ");
        return Err(DriftError(format!(
            "the source's columns changed (new: [{}]; gone: [{}]) and schema_drift is fail; set schema_drift: append_new_columns to land them",
            names(added.iter().map(|field| field.name().as_str()).collect()),
            names(missing)
        )));
    }
    let target = if policy == DriftPolicy::AppendNewColumns && !added.is_empty() {
        let mut fields: Vec<FieldRef> = current.fields().iter().cloned().collect();
        fields.extend(added);
        Arc::new(Schema::new(fields))
    } else {
        Arc::clone(current)
    };
    let columns = target
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            Some(column) => widen(column, field),
            None => Ok(new_null_array(field.data_type(), batch.num_rows())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let batch = RecordBatch::try_new(Arc::clone(&target), columns)
        .map_err(|err| DriftError(err.to_string()))?;
    Ok((batch, target))
}

/// Casts every column of `batch` to `schema`'s types (same names, same order).
fn cast_to(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, DriftError> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| widen(column, field))
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(Arc::clone(schema), columns).map_err(|err| DriftError(err.to_string()))
}

/// Casts `column` to `field`'s type when no value can be lost.
fn widen(column: &ArrayRef, field: &Field) -> Result<ArrayRef, DriftError> {
    let (from, to) = (column.data_type(), field.data_type());
    if from == to {
        return Ok(Arc::clone(column));
    }
    if !widens(from, to) {
        return Err(DriftError(format!(
            "column '{}' changed type from {to} to {from}, which the bronze table cannot hold without losing data; land the source again with --full-refresh, or cast it in the source",
            field.name()
        )));
    }
    cast(column, to).map_err(|err| DriftError(format!("column '{}': {err}", field.name())))
}

/// True when every value of `from` has an exact value in `to`.
fn widens(from: &DataType, to: &DataType) -> bool {
    use DataType::{
        Boolean, Date32, Float32, Float64, Int8, Int16, Int32, Int64, Null, Timestamp, Utf8,
    };
    match (from, to) {
        (Null, _) => true,
        (Int8, Int16 | Int32 | Int64 | Float32 | Float64) => true,
        (Int16, Int32 | Int64 | Float32 | Float64) => true,
        (Int32, Int64 | Float64) => true,
        (Float32, Float64) => true,
        (Date32, Timestamp(_, _)) => true,
        // Scalars read as text where the column is text (a JSON field that was a string).
        (
            Boolean | Int8 | Int16 | Int32 | Int64 | Float32 | Float64 | Date32 | Timestamp(_, _),
            Utf8,
        ) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int32Array, Int64Array, StringArray};

    fn batch(fields: Vec<(&str, ArrayRef)>) -> RecordBatch {
        RecordBatch::try_from_iter(fields).unwrap()
    }

    fn schema(fields: &[(&str, DataType)]) -> SchemaRef {
        Arc::new(Schema::new(
            fields
                .iter()
                .map(|(name, data_type)| Field::new(*name, data_type.clone(), true))
                .collect::<Vec<_>>(),
        ))
    }

    #[test]
    fn new_columns_are_appended_missing_ones_are_null_and_narrow_types_widen() {
        let current = schema(&[("id", DataType::Int64), ("name", DataType::Utf8)]);
        let incoming = batch(vec![
            ("id", Arc::new(Int32Array::from(vec![1, 2])) as ArrayRef),
            ("email", Arc::new(StringArray::from(vec!["a", "b"]))),
        ]);
        let (landed, target) =
            conform(&incoming, Some(&current), DriftPolicy::AppendNewColumns).unwrap();
        let names: Vec<&str> = target.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["id", "name", "email"]);
        assert_eq!(landed.column(0).data_type(), &DataType::Int64);
        assert_eq!(landed.column(1).null_count(), 2);
        let (_, kept) = conform(&incoming, Some(&current), DriftPolicy::Ignore).unwrap();
        assert_eq!(kept, current);
    }

    #[test]
    fn fail_names_the_columns_and_a_narrowing_type_fails() {
        let current = schema(&[("id", DataType::Int32)]);
        let incoming = batch(vec![
            ("id", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
            ("extra", Arc::new(StringArray::from(vec!["x"]))),
        ]);
        let DriftError(message) =
            conform(&incoming, Some(&current), DriftPolicy::Fail).unwrap_err();
        assert!(message.contains("new: [extra]"), "{message}");
        let DriftError(message) =
            conform(&incoming, Some(&current), DriftPolicy::AppendNewColumns).unwrap_err();
        assert!(message.contains("column 'id' changed type"), "{message}");
    }
}
