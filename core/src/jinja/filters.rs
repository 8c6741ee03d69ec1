//! dbt's type filters: `as_bool`, `as_number`, `as_text`, `as_native`, used where a rendered
//! string must become a typed value (`enabled: "{{ var('x') | as_bool }}"`).

use minijinja::value::ValueKind;
use minijinja::{Error, ErrorKind, Value};

/// `as_bool`: `true`/`false` (any case), `1`/`0`, or a boolean or number.
pub fn as_bool(value: Value) -> Result<Value, Error> {
    match value.kind() {
        ValueKind::Bool | ValueKind::None | ValueKind::Undefined => {
            Ok(Value::from(value.is_true()))
        }
        ValueKind::Number => Ok(Value::from(value.is_true())),
        _ => match value.to_string().trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Ok(Value::from(true)),
            "false" | "0" | "" | "none" => Ok(Value::from(false)),
            other => Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("as_bool: '{other}' is not a boolean; use true or false"),
            )),
        },
    }
}

/// `as_number`: an integer or a decimal number from its text.
pub fn as_number(value: Value) -> Result<Value, Error> {
    if value.kind() == ValueKind::Number {
        return Ok(value);
    }
    let text = value.to_string();
    let text = text.trim();
    if let Ok(integer) = text.parse::<i64>() {
        return Ok(Value::from(integer));
    }
    text.parse::<f64>().map(Value::from).map_err(|_| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("as_number: '{text}' is not a number"),
        )
    })
}

/// `as_text`: the value's text.
pub fn as_text(value: Value) -> Value {
    if value.kind() == ValueKind::String {
        value
    } else {
        Value::from(value.to_string())
    }
}

/// `as_native`: a value from its literal text (a number, a boolean, a list or a mapping in
/// JSON or Python spelling); any other text stays text.
pub fn as_native(value: Value) -> Value {
    if value.kind() != ValueKind::String {
        return value;
    }
    let text = value.to_string();
    let json = text
        .trim()
        .replace('\'', "\"")
        .replace("True", "true")
        .replace("False", "false")
        .replace("None", "null");
    match serde_json::from_str::<serde_json::Value>(&json) {
        Ok(parsed) => Value::from(minijinja::value::Serde(parsed)),
        Err(_) => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_become_typed_values() {
        assert_eq!(as_bool(Value::from("True")).unwrap(), Value::from(true));
        assert_eq!(as_bool(Value::from("false")).unwrap(), Value::from(false));
        assert!(as_bool(Value::from("maybe")).is_err());
        assert_eq!(as_number(Value::from(" 42 ")).unwrap(), Value::from(42));
        assert_eq!(as_number(Value::from("1.5")).unwrap(), Value::from(1.5));
        assert_eq!(as_text(Value::from(7)), Value::from("7"));
        assert_eq!(
            as_native(Value::from("['a', 1]")),
            Value::from(minijinja::value::Serde(serde_json::json!(["a", 1])))
        );
        assert_eq!(as_native(Value::from("plain")), Value::from("plain"));
    }
}
