//! A YAML document as a tree whose every node knows its line and column.
//!
//! dbt's YAML is loose (a test is a string or a map, configs nest by folder, unknown keys are
//! common), so Strata parses YAML into this tree first and reads typed values out of it by hand.
//! That keeps every later error — a wrong type, an unknown materialization, a test on a column
//! that does not exist — pointing at the exact line of the file.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use crate::diagnostics::{ProjectDiagnostic, SourceText};

/// One YAML node with its position (1-based line and column; 0 when unknown).
#[derive(Debug, Clone, PartialEq)]
pub struct Yaml {
    /// The node's value.
    pub value: YamlValue,
    /// 1-based line of the node, 0 when the parser could not tell.
    pub line: u32,
    /// 1-based column of the node, 0 when the parser could not tell.
    pub column: u32,
}

/// The value of a YAML node.
#[derive(Debug, Clone, PartialEq)]
pub enum YamlValue {
    /// `~`, `null` or an empty value.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// A string.
    String(String),
    /// A sequence.
    Seq(Vec<Yaml>),
    /// A mapping, in document order; keys are scalars rendered as strings.
    Map(Vec<(YamlKey, Yaml)>),
}

/// A mapping key with its own position, so that "unknown key" errors point at the key.
#[derive(Debug, Clone, PartialEq)]
pub struct YamlKey {
    /// The key, rendered as a string.
    pub name: String,
    /// 1-based line of the key.
    pub line: u32,
    /// 1-based column of the key.
    pub column: u32,
}

impl Yaml {
    /// Parses a YAML document. An empty document gives `Null`.
    ///
    /// # Errors
    /// Returns a diagnostic at the parser's error location when the text is not valid YAML.
    pub fn parse(source: &SourceText) -> Result<Yaml, Box<ProjectDiagnostic>> {
        if source.text.trim().is_empty() {
            return Ok(Yaml {
                value: YamlValue::Null,
                line: 1,
                column: 1,
            });
        }
        // A repeated key reaches the visitor, where the later one wins: PyYAML, and so dbt,
        // accept such files (public projects have them).
        let mut options = serde_saphyr::Options::default();
        options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::PassThrough;
        match serde_saphyr::from_str_with_options::<Spanned<YamlValue>>(&source.text, options) {
            Ok(spanned) => Ok(Yaml {
                value: spanned.value,
                line: spanned.referenced.line() as u32,
                column: spanned.referenced.column() as u32,
            }),
            Err(err) => {
                let message = first_line(&err.to_string());
                let diagnostic =
                    ProjectDiagnostic::error("strata::yaml", format!("invalid YAML: {message}"))
                        .with_hint("check the indentation and quoting around this position");
                Err(Box::new(match err.location() {
                    Some(location) => {
                        diagnostic.at(source, location.line() as u32, location.column() as u32)
                    }
                    None => diagnostic.in_file(&source.path),
                }))
            }
        }
    }

    /// Returns the value of `key` when this node is a mapping that has it.
    pub fn get(&self, key: &str) -> Option<&Yaml> {
        match &self.value {
            YamlValue::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.name == key)
                .map(|(_, value)| value),
            _ => None,
        }
    }

    /// Returns the entries when this node is a mapping.
    pub fn entries(&self) -> Option<&[(YamlKey, Yaml)]> {
        match &self.value {
            YamlValue::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// Returns the string when this node is a string.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            YamlValue::String(text) => Some(text),
            _ => None,
        }
    }

    /// Returns the scalar rendered as a string (strings, numbers, booleans).
    pub fn scalar_string(&self) -> Option<String> {
        match &self.value {
            YamlValue::String(text) => Some(text.clone()),
            YamlValue::Int(number) => Some(number.to_string()),
            YamlValue::Float(number) => Some(number.to_string()),
            YamlValue::Bool(flag) => Some(flag.to_string()),
            _ => None,
        }
    }

    /// Returns true for `null` and `~`.
    pub fn is_null(&self) -> bool {
        matches!(self.value, YamlValue::Null)
    }

    /// A short word for the node's type, for "expected X, found Y" messages.
    pub fn kind(&self) -> &'static str {
        match self.value {
            YamlValue::Null => "null",
            YamlValue::Bool(_) => "a boolean",
            YamlValue::Int(_) => "an integer",
            YamlValue::Float(_) => "a number",
            YamlValue::String(_) => "a string",
            YamlValue::Seq(_) => "a list",
            YamlValue::Map(_) => "a mapping",
        }
    }

    /// Converts the node into JSON, dropping positions.
    pub fn to_json(&self) -> serde_json::Value {
        match &self.value {
            YamlValue::Null => serde_json::Value::Null,
            YamlValue::Bool(flag) => serde_json::Value::Bool(*flag),
            YamlValue::Int(number) => serde_json::Value::from(*number),
            YamlValue::Float(number) => serde_json::Number::from_f64(*number)
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
            YamlValue::String(text) => serde_json::Value::String(text.clone()),
            YamlValue::Seq(items) => {
                serde_json::Value::Array(items.iter().map(Yaml::to_json).collect())
            }
            YamlValue::Map(entries) => serde_json::Value::Object(
                entries
                    .iter()
                    .map(|(key, value)| (key.name.clone(), value.to_json()))
                    .collect(),
            ),
        }
    }
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().trim().to_string()
}

impl<'de> Deserialize<'de> for YamlValue {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = YamlValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<YamlValue, E> {
        Ok(YamlValue::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<YamlValue, E> {
        Ok(YamlValue::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<YamlValue, E> {
        Ok(i64::try_from(v).map_or(YamlValue::Float(v as f64), YamlValue::Int))
    }
    fn visit_i128<E>(self, v: i128) -> Result<YamlValue, E> {
        Ok(i64::try_from(v).map_or(YamlValue::Float(v as f64), YamlValue::Int))
    }
    fn visit_u128<E>(self, v: u128) -> Result<YamlValue, E> {
        Ok(i64::try_from(v).map_or(YamlValue::Float(v as f64), YamlValue::Int))
    }
    fn visit_f64<E>(self, v: f64) -> Result<YamlValue, E> {
        Ok(YamlValue::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<YamlValue, E> {
        Ok(YamlValue::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<YamlValue, E> {
        Ok(YamlValue::String(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<YamlValue, E> {
        Ok(YamlValue::String(String::from_utf8_lossy(v).into_owned()))
    }
    fn visit_none<E>(self) -> Result<YamlValue, E> {
        Ok(YamlValue::Null)
    }
    fn visit_unit<E>(self) -> Result<YamlValue, E> {
        Ok(YamlValue::Null)
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<YamlValue, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
    fn visit_newtype_struct<D: de::Deserializer<'de>>(self, d: D) -> Result<YamlValue, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<YamlValue, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<YamlValue>>()? {
            items.push(from_spanned(item));
        }
        Ok(YamlValue::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<YamlValue, A::Error> {
        let mut entries: Vec<(YamlKey, Yaml)> = Vec::new();
        while let Some(key) = map.next_key::<Spanned<YamlValue>>()? {
            let value = from_spanned(map.next_value::<Spanned<YamlValue>>()?);
            let name = match key.value {
                YamlValue::String(text) => text,
                YamlValue::Int(number) => number.to_string(),
                YamlValue::Float(number) => number.to_string(),
                YamlValue::Bool(flag) => flag.to_string(),
                YamlValue::Null => String::from("null"),
                YamlValue::Seq(_) | YamlValue::Map(_) => {
                    return Err(de::Error::custom("mapping keys must be scalars"));
                }
            };
            let key = YamlKey {
                name,
                line: key.referenced.line() as u32,
                column: key.referenced.column() as u32,
            };
            // A later duplicate key wins, as in most YAML loaders (and dbt's).
            entries.retain(|(existing, _)| existing.name != key.name);
            entries.push((key, value));
        }
        Ok(YamlValue::Map(entries))
    }
}

fn from_spanned(spanned: Spanned<YamlValue>) -> Yaml {
    Yaml {
        value: spanned.value,
        line: spanned.referenced.line() as u32,
        column: spanned.referenced.column() as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Yaml {
        Yaml::parse(&SourceText::new("x.yml", text)).expect("valid yaml")
    }

    #[test]
    fn nodes_carry_their_positions() {
        let doc = parse("version: 2\nmodels:\n  - name: orders\n    tests: [unique]\n");
        let models = doc.get("models").unwrap();
        let YamlValue::Seq(items) = &models.value else {
            panic!("{models:?}")
        };
        let name = items[0].get("name").unwrap();
        assert_eq!(name.as_str(), Some("orders"));
        assert_eq!((name.line, name.column), (3, 11));
        let (key, _) = &items[0].entries().unwrap()[1];
        assert_eq!((key.name.as_str(), key.line, key.column), ("tests", 4, 5));
    }

    #[test]
    fn invalid_yaml_points_at_the_problem() {
        let err = Yaml::parse(&SourceText::new("bad.yml", "a: [1, 2\nb: 3\n")).unwrap_err();
        assert_eq!(err.file.as_deref(), Some(std::path::Path::new("bad.yml")));
        assert!(err.line.is_some(), "{err:?}");
        assert!(err.message.starts_with("invalid YAML"), "{}", err.message);
    }

    #[test]
    fn scalars_of_every_kind() {
        let doc = parse("a: 1\nb: 2.5\nc: true\nd: ~\ne: text\n");
        assert_eq!(doc.get("a").unwrap().value, YamlValue::Int(1));
        assert_eq!(doc.get("b").unwrap().value, YamlValue::Float(2.5));
        assert_eq!(doc.get("c").unwrap().value, YamlValue::Bool(true));
        assert!(doc.get("d").unwrap().is_null());
        assert_eq!(
            doc.get("e").unwrap().scalar_string().as_deref(),
            Some("text")
        );
    }

    #[test]
    fn a_repeated_key_keeps_the_later_value_as_pyyaml_does() {
        let yaml = parse("seeds:\n  a: 1\n  b: 2\n  a: 3\n  c:\n    x: 1\n  c:\n    x: 2\n");
        let seeds = yaml.get("seeds").unwrap();
        assert_eq!(seeds.entries().unwrap().len(), 3);
        assert_eq!(
            seeds.get("c").unwrap().get("x").unwrap().to_json(),
            serde_json::json!(2)
        );
        assert_eq!(seeds.get("a").unwrap().to_json(), serde_json::json!(3));
    }
}
