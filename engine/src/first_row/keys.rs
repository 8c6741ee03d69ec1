//! A batch's deduplication keys in the form the contest hashes and compares.
//!
//! The common key — one string or one integer-like column, such as an event id — is kept as the
//! column itself: when the key is a column of the input, the buffered batch already holds it and
//! the key costs no memory of its own. Any other key (several columns, floats, nested types) is
//! converted to Arrow's row format, which copies it.

use std::hash::BuildHasher;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, LargeStringArray, StringArray, StringViewArray,
};
use datafusion::arrow::buffer::{Buffer, NullBuffer};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::row::Rows;

/// The keys of one batch's rows.
pub(super) enum KeyValues {
    Utf8(StringArray),
    LargeUtf8(LargeStringArray),
    Utf8View(StringViewArray),
    /// One column of integers, dates, times, timestamps or decimals, equal exactly when their
    /// bytes are.
    Fixed {
        values: Buffer,
        width: usize,
        nulls: Option<NullBuffer>,
    },
    /// Any other key, in Arrow's row format.
    Rows(Rows),
}

impl KeyValues {
    /// The column form of `column`, when its type has one.
    pub(super) fn of_column(column: &ArrayRef) -> Option<Self> {
        let data_type = column.data_type();
        Some(match data_type {
            DataType::Utf8 => Self::Utf8(column.as_string::<i32>().clone()),
            DataType::LargeUtf8 => Self::LargeUtf8(column.as_string::<i64>().clone()),
            DataType::Utf8View => Self::Utf8View(column.as_string_view().clone()),
            _ if compares_by_bytes(data_type) => {
                let width = data_type.primitive_width()?;
                let data = column.to_data();
                let values = data
                    .buffers()
                    .first()?
                    .slice_with_length(data.offset() * width, data.len() * width);
                Self::Fixed {
                    values,
                    width,
                    nulls: column.logical_nulls(),
                }
            }
            _ => return None,
        })
    }

    /// The bytes of key `row`; `None` for a null key (every null key is the same key, as in a
    /// window's `partition by`).
    fn bytes(&self, row: usize) -> Option<&[u8]> {
        match self {
            Self::Utf8(array) => array.is_valid(row).then(|| array.value(row).as_bytes()),
            Self::LargeUtf8(array) => array.is_valid(row).then(|| array.value(row).as_bytes()),
            Self::Utf8View(array) => array.is_valid(row).then(|| array.value(row).as_bytes()),
            Self::Fixed {
                values,
                width,
                nulls,
            } => nulls
                .as_ref()
                .is_none_or(|nulls| nulls.is_valid(row))
                .then(|| &values[row * width..(row + 1) * width]),
            Self::Rows(rows) => Some(rows.row(row).data()),
        }
    }

    /// Whether key `row` equals key `other_row` of `other` (keys of the same contest).
    pub(super) fn same(&self, row: usize, other: &Self, other_row: usize) -> bool {
        self.bytes(row) == other.bytes(other_row)
    }

    /// The hash of each key; equal keys hash equally in every batch of one contest.
    pub(super) fn hashes(&self, rows: usize, hasher: &impl BuildHasher) -> Vec<u64> {
        (0..rows)
            .map(|row| hasher.hash_one(self.bytes(row)))
            .collect()
    }

    /// Memory the keys hold beyond the batch they were taken from: none for a column of the
    /// batch, all of it for row format or a computed column (`computed`).
    pub(super) fn own_size(&self, computed: bool) -> usize {
        match self {
            Self::Rows(rows) => rows.size(),
            _ if !computed => 0,
            Self::Utf8(array) => array.get_array_memory_size(),
            Self::LargeUtf8(array) => array.get_array_memory_size(),
            Self::Utf8View(array) => array.get_array_memory_size(),
            Self::Fixed { values, nulls, .. } => {
                values.capacity() + nulls.as_ref().map_or(0, |n| n.buffer().capacity())
            }
        }
    }
}

/// Types whose values are equal exactly when their bytes are (not floats: `-0.0` and `0.0`).
fn compares_by_bytes(data_type: &DataType) -> bool {
    data_type.is_integer()
        || matches!(
            data_type,
            DataType::Date32
                | DataType::Date64
                | DataType::Time32(_)
                | DataType::Time64(_)
                | DataType::Timestamp(..)
                | DataType::Duration(_)
                | DataType::Decimal128(..)
                | DataType::Decimal256(..)
        )
}
