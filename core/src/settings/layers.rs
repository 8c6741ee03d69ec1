//! The four layers of settings — defaults, file, `STRATA__*` environment, flags — merged by
//! figment, with the origin of every value kept and figment's errors turned into ours.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use figment::providers::Serialized;
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use super::{Resolved, Settings, read_file};

/// The prefix of settings in the environment: `STRATA__SECTION__KEY`.
pub const ENV_PREFIX: &str = "STRATA__";

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Its default.
    Default,
    /// The settings file.
    File(PathBuf),
    /// An environment variable (its name).
    Env(String),
    /// A command-line flag (its name).
    Flag(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File(path) => write!(f, "file {}", path.display()),
            Origin::Env(name) => write!(f, "env {name}"),
            Origin::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

/// Settings that cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The settings file is not a YAML mapping.
    #[error("{} is not a YAML mapping of settings: {message}", path.display())]
    Yaml {
        /// The file.
        path: PathBuf,
        /// The parser's message, with the line.
        message: String,
    },
    /// A key no setting has.
    #[error("unknown setting '{key}' in {origin}{suggestion}; `strata config show` lists them all")]
    UnknownKey {
        /// The dotted key.
        key: String,
        /// The layer it came from.
        origin: String,
        /// ` (did you mean '…'?)` or empty.
        suggestion: String,
    },
    /// A value of the wrong type.
    #[error("invalid setting '{key}' in {origin}: {message}")]
    Invalid {
        /// The dotted key.
        key: String,
        /// The layer it came from.
        origin: String,
        /// What is wrong.
        message: String,
    },
}

/// Command-line flags that set settings: each flag given names its dotted key.
#[derive(Debug, Default, Clone)]
pub struct Flags {
    values: Vec<(String, String, Value)>,
}

impl Flags {
    /// Sets `key` (e.g. `worker.slots`) from `flag` (e.g. `--slots`) when the flag was given.
    pub fn set<T: serde::Serialize>(mut self, key: &str, flag: &str, value: Option<T>) -> Self {
        if let Some(value) = value.and_then(|value| Value::serialize(value).ok()) {
            self.values.push((key.to_string(), flag.to_string(), value));
        }
        self
    }
}

/// Resolves the settings: defaults < `file` < `STRATA__*` variables of `env` < `flags`.
///
/// # Errors
/// Returns an error for an unreadable or malformed file, an unknown key in any layer (with
/// the closest known key), or a value of the wrong type.
pub fn load(
    file: Option<&Path>,
    env: &BTreeMap<String, String>,
    flags: Flags,
) -> Result<Resolved, SettingsError> {
    let mut origins = BTreeMap::new();
    let mut figment = Figment::from(Serialized::defaults(Settings::default()));
    if let Some(path) = file {
        let dict = file_layer(path)?;
        note_origins(&dict, "", &mut origins, &|_| {
            Origin::File(path.to_path_buf())
        });
        figment = figment.merge(Layer::new(format!("file {}", path.display()), dict));
    }
    let env_dict = env_layer(env);
    note_origins(&env_dict, "", &mut origins, &|key| {
        Origin::Env(env_name(key))
    });
    figment = figment.merge(Layer::new(String::from("the environment"), env_dict));
    let mut flag_dict = Dict::new();
    let mut flag_names = BTreeMap::new();
    for (key, flag, value) in flags.values {
        insert(&mut flag_dict, &key.split('.').collect::<Vec<_>>(), value);
        flag_names.insert(key, flag);
    }
    note_origins(&flag_dict, "", &mut origins, &|key| {
        Origin::Flag(flag_names.get(key).cloned().unwrap_or_default())
    });
    figment = figment.merge(Layer::new(String::from("the command line"), flag_dict));
    let settings: Settings = figment.extract().map_err(|err| error(err, &origins))?;
    Ok(Resolved { settings, origins })
}

/// The settings file as a dictionary (an empty file is no settings).
fn file_layer(path: &Path) -> Result<Dict, SettingsError> {
    let text = read_file(path)?;
    if text.trim().is_empty() {
        return Ok(Dict::new());
    }
    serde_saphyr::from_str::<Dict>(&text).map_err(|err| SettingsError::Yaml {
        path: path.to_path_buf(),
        message: err.to_string(),
    })
}

/// The `STRATA__SECTION__KEY` variables as a dictionary; values are parsed as figment parses
/// environment values (numbers, booleans, `[a, b]` lists, strings).
fn env_layer(env: &BTreeMap<String, String>) -> Dict {
    let mut dict = Dict::new();
    for (name, text) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if path.iter().any(String::is_empty) {
            continue;
        }
        let value = text
            .parse::<Value>()
            .unwrap_or_else(|_| Value::from(text.clone()));
        insert(
            &mut dict,
            &path.iter().map(String::as_str).collect::<Vec<_>>(),
            value,
        );
    }
    dict
}

/// The variable that sets a dotted key.
fn env_name(key: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        key.split('.')
            .map(str::to_ascii_uppercase)
            .collect::<Vec<_>>()
            .join("__")
    )
}

/// Puts `value` at `path` in `dict`, creating the dictionaries on the way.
fn insert(dict: &mut Dict, path: &[&str], value: Value) {
    match path {
        [] => {}
        [last] => {
            dict.insert((*last).to_string(), value);
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry((*first).to_string())
                .or_insert_with(|| Value::from(Dict::new()));
            if entry.as_dict().is_none() {
                *entry = Value::from(Dict::new());
            }
            if let Value::Dict(_, inner) = entry {
                insert(inner, rest, value);
            }
        }
    }
}

/// Records `origin` for every leaf key of `dict` (a later layer overwrites an earlier one).
fn note_origins(
    dict: &Dict,
    prefix: &str,
    origins: &mut BTreeMap<String, Origin>,
    origin: &dyn Fn(&str) -> Origin,
) {
    for (name, value) in dict {
        let key = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        match value.as_dict() {
            Some(inner) if !inner.is_empty() => note_origins(inner, &key, origins, origin),
            _ => {
                origins.insert(key.clone(), origin(&key));
            }
        }
    }
}

/// One layer as a figment provider, named for error messages.
struct Layer {
    name: String,
    dict: Dict,
}

impl Layer {
    fn new(name: String, dict: Dict) -> Layer {
        Layer { name, dict }
    }
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name.clone())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

/// Our error for figment's, naming the key, the layer and, for an unknown key, the closest
/// known one.
fn error(err: figment::Error, origins: &BTreeMap<String, Origin>) -> SettingsError {
    let path = err.path.join(".");
    // The layer of the key itself or, for an unknown section, of a key inside it.
    let origin_of = |key: &str| {
        let inside = format!("{key}.");
        origins
            .iter()
            .find(|(known, _)| *known == key || known.starts_with(&inside))
            .map_or_else(
                || String::from("the settings"),
                |(_, origin)| origin.to_string(),
            )
    };
    match &err.kind {
        figment::error::Kind::UnknownField(field, expected) => {
            // figment's path may or may not end with the field already.
            let key = if path.is_empty() {
                field.clone()
            } else if err.path.last() == Some(field) {
                path.clone()
            } else {
                format!("{path}.{field}")
            };
            SettingsError::UnknownKey {
                origin: origin_of(&key),
                suggestion: crate::config::did_you_mean(field, expected.iter().copied()),
                key,
            }
        }
        kind => SettingsError::Invalid {
            origin: origin_of(&path),
            message: kind.to_string(),
            key: path,
        },
    }
}
