//! SQL of the built-in generic data tests. Each query returns the failing rows, so a test
//! passes when its query returns none (dbt's convention).

use crate::jinja::quote_identifier;

/// The generic tests Strata knows without a project-defined `{% test %}`.
pub const BUILT_IN_TESTS: [&str; 4] = ["not_null", "unique", "accepted_values", "relationships"];

/// The subject of a generic test: a relation, optionally filtered by the test's `where`.
fn subject(relation: &str, where_clause: Option<&str>) -> String {
    match where_clause {
        Some(condition) => format!("(select * from {relation} where {condition}) as dbt_subquery"),
        None => relation.to_string(),
    }
}

/// `not_null`: rows where the column is null.
pub fn not_null(relation: &str, column: &str, where_clause: Option<&str>) -> String {
    let column = quote_identifier(column);
    format!(
        "select {column}\nfrom {}\nwhere {column} is null\n",
        subject(relation, where_clause)
    )
}

/// `unique`: values that appear more than once (nulls are not compared, as in dbt).
pub fn unique(relation: &str, column: &str, where_clause: Option<&str>) -> String {
    let column = quote_identifier(column);
    format!(
        "select {column} as unique_field, count(*) as n_records\nfrom {}\nwhere {column} is not null\ngroup by {column}\nhaving count(*) > 1\n",
        subject(relation, where_clause)
    )
}

/// `accepted_values`: values outside the list, with their counts.
///
/// # Errors
/// Returns a message when `values` is missing, empty or holds something other than scalars.
pub fn accepted_values(
    relation: &str,
    column: &str,
    values: Option<&serde_json::Value>,
    quote: bool,
    where_clause: Option<&str>,
) -> Result<String, String> {
    let Some(serde_json::Value::Array(values)) = values else {
        return Err(String::from(
            "accepted_values needs 'values:', a list of the allowed values",
        ));
    };
    if values.is_empty() {
        return Err(String::from("accepted_values needs at least one value"));
    }
    let mut literals = Vec::with_capacity(values.len());
    for value in values {
        let literal = match value {
            serde_json::Value::String(text) if quote => format!("'{}'", text.replace('\'', "''")),
            serde_json::Value::String(text) => text.clone(),
            serde_json::Value::Number(number) if quote => format!("'{number}'"),
            serde_json::Value::Number(number) => number.to_string(),
            serde_json::Value::Bool(flag) if quote => format!("'{flag}'"),
            serde_json::Value::Bool(flag) => flag.to_string(),
            other => {
                return Err(format!(
                    "accepted_values can only list scalars, found {other}"
                ));
            }
        };
        literals.push(literal);
    }
    let column = quote_identifier(column);
    Ok(format!(
        "with all_values as (\n    select {column} as value_field, count(*) as n_records\n    from {}\n    group by {column}\n)\nselect *\nfrom all_values\nwhere value_field not in ({})\n",
        subject(relation, where_clause),
        literals.join(", ")
    ))
}

/// `relationships`: child values with no matching parent row (null children are ignored).
pub fn relationships(
    relation: &str,
    column: &str,
    parent_relation: &str,
    parent_field: &str,
    where_clause: Option<&str>,
) -> String {
    let column = quote_identifier(column);
    let field = quote_identifier(parent_field);
    format!(
        "with child as (\n    select {column} as from_field\n    from {}\n    where {column} is not null\n),\nparent as (\n    select {field} as to_field\n    from {parent_relation}\n)\nselect from_field\nfrom child\nleft join parent on child.from_field = parent.to_field\nwhere parent.to_field is null\n",
        subject(relation, where_clause)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_values_quotes_unless_told_not_to() {
        let values = serde_json::json!(["a", "it's"]);
        let sql = accepted_values("s.t", "status", Some(&values), true, None).unwrap();
        assert!(sql.contains("not in ('a', 'it''s')"), "{sql}");
        let numbers = serde_json::json!([1, 2]);
        let sql = accepted_values("s.t", "n", Some(&numbers), false, Some("n > 0")).unwrap();
        assert!(
            sql.contains("not in (1, 2)") && sql.contains("where n > 0"),
            "{sql}"
        );
        assert!(accepted_values("s.t", "n", None, true, None).is_err());
    }

    #[test]
    fn identifiers_that_need_quotes_get_them() {
        assert!(not_null("s.t", "Order Id", None).contains("\"Order Id\" is null"));
    }
}
