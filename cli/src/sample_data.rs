//! `strata generate-sample-data`: deterministic, deliberately messy raw data for
//! `examples/medallion` — the kind of input bronze and silver exist to clean up.
//!
//! The same arguments always give the same files. Events are strings only, as an exporter
//! would land them: duplicate deliveries (exact copies of earlier events), null and blank ids,
//! event types in mixed case with stray spaces, unparsable timestamps and amounts, unknown and
//! non-numeric user ids.

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use clap::Args;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

/// Arguments of `strata generate-sample-data`.
#[derive(Debug, Clone, Args)]
pub struct SampleDataArgs {
    /// Number of event rows to write, duplicates included.
    #[arg(long, default_value_t = 100_000)]
    pub events: u64,
    /// Folder to write `events/*.parquet` and `users.csv` into.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Number of registered users (default: one per 50 events, at least 100).
    #[arg(long)]
    pub users: Option<u64>,
    /// Number of event files (load batches).
    #[arg(long, default_value_t = 4)]
    pub batches: u64,
    /// Seed of the random generator.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleDataSummary {
    /// Event rows written, duplicates included.
    pub events: u64,
    /// Rows that are exact copies of an earlier event (duplicate deliveries).
    pub duplicates: u64,
    /// User rows written.
    pub users: u64,
    /// Files written.
    pub files: Vec<PathBuf>,
}

impl fmt::Display for SampleDataSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "wrote {} events ({} duplicate deliveries) in {} files and {} users",
            self.events,
            self.duplicates,
            self.files.len().saturating_sub(1),
            self.users
        )?;
        if let Some(first) = self.files.first().and_then(|file| file.parent()) {
            write!(f, " under {}", first.parent().unwrap_or(first).display())?;
        }
        Ok(())
    }
}

/// Errors while writing sample data.
#[derive(Debug, thiserror::Error)]
pub enum SampleDataError {
    /// A file or folder could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Parquet encoding failed.
    #[error("cannot write parquet file {path}: {source}")]
    Parquet {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: parquet::errors::ParquetError,
    },
    /// The users CSV could not be written.
    #[error("cannot write {path}: {source}")]
    Csv {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: csv::Error,
    },
    /// An argument is out of range.
    #[error("{0}")]
    InvalidArgument(String),
}

/// SplitMix64: tiny, fast and fully deterministic across platforms.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound`.
    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }

    /// True with probability `percent`/1000.
    fn per_mille(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

const EVENT_TYPES: [(&str, u64); 6] = [
    ("page_view", 50),
    ("click", 25),
    ("add_to_cart", 10),
    ("purchase", 6),
    ("signup", 5),
    ("logout", 4),
];
const DEVICES: [&str; 5] = ["Mobile", " desktop", "TABLET", "mobile ", "Desktop"];
const PLANS: [&str; 5] = ["free", "Pro", " enterprise", "FREE", "pro"];
const COUNTRIES: [&str; 6] = ["de", "FR", " us", "GB", "nl ", "Es"];
/// Calendar of the generated events: January 2026.
const DAYS: u64 = 31;

fn messy_event_type(random: &mut Random) -> Option<String> {
    if random.per_mille(10) {
        return None;
    }
    let total: u64 = EVENT_TYPES.iter().map(|(_, weight)| weight).sum();
    let mut pick = random.below(total);
    let mut name = EVENT_TYPES[0].0;
    for (candidate, weight) in EVENT_TYPES {
        if pick < weight {
            name = candidate;
            break;
        }
        pick -= weight;
    }
    let cased = match random.below(4) {
        0 => name.to_ascii_uppercase(),
        1 => {
            let mut chars = name.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        }
        _ => name.to_string(),
    };
    Some(match random.below(5) {
        0 => format!(" {cased}"),
        1 => format!("{cased}  "),
        _ => cased,
    })
}

struct EventRow {
    event_id: Option<String>,
    user_id: Option<String>,
    event_type: Option<String>,
    event_timestamp: Option<String>,
    amount: Option<String>,
    device: Option<String>,
}

fn new_event(sequence: u64, users: u64, random: &mut Random) -> EventRow {
    let event_id = match random.below(1000) {
        0..=2 => None,
        3..=4 => Some(String::from("  ")),
        _ => Some(format!("evt_{sequence:010}")),
    };
    let user_id = match random.below(1000) {
        0..=9 => None,
        10..=14 => Some(String::from("user?")),
        15..=44 => Some((users + 1 + random.below(1000)).to_string()),
        _ => Some((1 + random.below(users)).to_string()),
    };
    let event_type = messy_event_type(random);
    let event_timestamp = match random.below(1000) {
        0..=7 => None,
        8..=11 => Some(String::from("not a timestamp")),
        12..=14 => Some(String::from("N/A")),
        _ => Some(format!(
            "2026-01-{:02} {:02}:{:02}:{:02}",
            1 + random.below(DAYS),
            random.below(24),
            random.below(60),
            random.below(60)
        )),
    };
    let buys = matches!(event_type.as_deref().map(|t| t.trim().to_ascii_lowercase()), Some(t) if t == "purchase" || t == "add_to_cart");
    let amount = if buys {
        match random.below(100) {
            0 => Some(String::from("n/a")),
            1 => None,
            _ => Some(format!(
                "{}.{:02}",
                1 + random.below(500),
                random.below(100)
            )),
        }
    } else if random.per_mille(20) {
        Some(String::new())
    } else {
        None
    };
    let device = if random.per_mille(30) {
        None
    } else {
        Some(DEVICES[random.below(DEVICES.len() as u64) as usize].to_string())
    };
    EventRow {
        event_id,
        user_id,
        event_type,
        event_timestamp,
        amount,
        device,
    }
}

fn events_schema() -> Arc<Schema> {
    Arc::new(Schema::new(
        [
            "event_id",
            "user_id",
            "event_type",
            "event_timestamp",
            "amount",
            "device",
        ]
        .map(|name| Field::new(name, DataType::Utf8, true))
        .to_vec(),
    ))
}

/// Writes the sample data and returns what was written.
///
/// # Errors
/// Returns an error when a file cannot be written or an argument is out of range.
pub fn generate(args: &SampleDataArgs) -> Result<SampleDataSummary, SampleDataError> {
    if args.batches == 0 {
        return Err(SampleDataError::InvalidArgument(String::from(
            "--batches must be at least 1",
        )));
    }
    let users = args.users.unwrap_or((args.events / 50).max(100));
    if users == 0 {
        return Err(SampleDataError::InvalidArgument(String::from(
            "--users must be at least 1",
        )));
    }
    let events_dir = args.out.join("events");
    create_dir(&events_dir)?;
    // Old batches from a larger earlier run would otherwise be read as well.
    if let Ok(entries) = std::fs::read_dir(&events_dir) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with("batch_") {
                std::fs::remove_file(entry.path()).map_err(|source| SampleDataError::Io {
                    path: entry.path(),
                    source,
                })?;
            }
        }
    }
    let mut random = Random(args.seed);
    let mut files = Vec::new();
    let mut recent: Vec<usize> = Vec::new();
    let mut history: Vec<EventRow> = Vec::new();
    let mut duplicates = 0u64;
    let mut sequence = 0u64;
    let per_batch = args.events.div_ceil(args.batches);
    let mut written = 0u64;
    for batch in 0..args.batches {
        let rows = per_batch.min(args.events - written);
        let path = events_dir.join(format!("batch_{:04}.parquet", batch + 1));
        let mut builders: Vec<StringBuilder> = (0..6).map(|_| StringBuilder::new()).collect();
        let file = File::create(&path).map_err(|source| SampleDataError::Io {
            path: path.clone(),
            source,
        })?;
        let properties = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_max_row_group_row_count(Some(1 << 20))
            .build();
        let parquet_error = |source| SampleDataError::Parquet {
            path: path.clone(),
            source,
        };
        let mut writer =
            ArrowWriter::try_new(file, events_schema(), Some(properties)).map_err(parquet_error)?;
        let flush = |builders: &mut Vec<StringBuilder>,
                     writer: &mut ArrowWriter<File>|
         -> Result<(), SampleDataError> {
            let columns: Vec<ArrayRef> = builders
                .iter_mut()
                .map(|builder| Arc::new(builder.finish()) as ArrayRef)
                .collect();
            if columns[0].is_empty() {
                return Ok(());
            }
            let batch = RecordBatch::try_new(events_schema(), columns).map_err(|err| {
                SampleDataError::Parquet {
                    path: path.clone(),
                    source: parquet::errors::ParquetError::ArrowError(err.to_string()),
                }
            })?;
            writer
                .write(&batch)
                .map_err(|source| SampleDataError::Parquet {
                    path: path.clone(),
                    source,
                })
        };
        let mut pending = 0usize;
        for _ in 0..rows {
            // About 2% of rows are exact redeliveries of one of the last thousand events.
            let duplicate = !recent.is_empty() && random.per_mille(20);
            let row_index = if duplicate {
                duplicates += 1;
                recent[random.below(recent.len() as u64) as usize]
            } else {
                sequence += 1;
                history.push(new_event(sequence, users, &mut random));
                let index = history.len() - 1;
                if recent.len() < 1000 {
                    recent.push(index);
                } else {
                    let slot = random.below(1000) as usize;
                    recent[slot] = index;
                }
                index
            };
            let row = &history[row_index];
            for (builder, value) in builders.iter_mut().zip([
                &row.event_id,
                &row.user_id,
                &row.event_type,
                &row.event_timestamp,
                &row.amount,
                &row.device,
            ]) {
                builder.append_option(value.as_deref());
            }
            pending += 1;
            if pending >= 65_536 {
                pending = 0;
                flush(&mut builders, &mut writer)?;
            }
            // Keep memory flat: only rows that may still be redelivered are kept.
            if history.len() > 4096 && recent.iter().all(|index| *index >= 2048) {
                history.drain(..2048);
                for index in &mut recent {
                    *index -= 2048;
                }
            }
        }
        flush(&mut builders, &mut writer)?;
        writer.close().map_err(|source| SampleDataError::Parquet {
            path: path.clone(),
            source,
        })?;
        written += rows;
        files.push(path);
    }
    let users_path = args.out.join("users.csv");
    write_users(&users_path, users, &mut random)?;
    files.push(users_path);
    Ok(SampleDataSummary {
        events: args.events,
        duplicates,
        users,
        files,
    })
}

fn create_dir(path: &Path) -> Result<(), SampleDataError> {
    std::fs::create_dir_all(path).map_err(|source| SampleDataError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn write_users(path: &Path, users: u64, random: &mut Random) -> Result<(), SampleDataError> {
    let csv_error = |source| SampleDataError::Csv {
        path: path.to_path_buf(),
        source,
    };
    let mut writer = csv::Writer::from_path(path).map_err(csv_error)?;
    writer
        .write_record(["user_id", "user_name", "signup_date", "plan", "country"])
        .map_err(csv_error)?;
    for user in 1..=users {
        let signup = if random.per_mille(10) {
            String::from("unknown")
        } else {
            format!(
                "20{:02}-{:02}-{:02}",
                23 + random.below(3),
                1 + random.below(12),
                1 + random.below(28)
            )
        };
        let plan = if random.per_mille(20) {
            String::new()
        } else {
            PLANS[random.below(PLANS.len() as u64) as usize].to_string()
        };
        let country = COUNTRIES[random.below(COUNTRIES.len() as u64) as usize].to_string();
        writer
            .write_record([
                user.to_string(),
                format!("User {user}"),
                signup,
                plan,
                country,
            ])
            .map_err(csv_error)?;
    }
    writer.flush().map_err(|source| SampleDataError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_deterministic_and_messy() {
        let first = tempfile::tempdir().unwrap();
        let second = tempfile::tempdir().unwrap();
        let args = |out: &Path| SampleDataArgs {
            events: 20_000,
            out: out.to_path_buf(),
            users: None,
            batches: 2,
            seed: 7,
        };
        let summary = generate(&args(first.path())).unwrap();
        generate(&args(second.path())).unwrap();
        assert_eq!(summary.events, 20_000);
        assert!(summary.duplicates > 200, "{summary}");
        for name in [
            "events/batch_0001.parquet",
            "events/batch_0002.parquet",
            "users.csv",
        ] {
            let a = std::fs::read(first.path().join(name)).unwrap();
            let b = std::fs::read(second.path().join(name)).unwrap();
            assert!(a == b, "{name} differs between runs");
        }
        let users = std::fs::read_to_string(first.path().join("users.csv")).unwrap();
        assert!(users.starts_with("user_id,user_name,signup_date,plan,country\n"));
        assert_eq!(users.lines().count(), 401);
    }
}
