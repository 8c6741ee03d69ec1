//! Unquoted identifiers that name a mixed-case column resolve to it, as in DuckDB and
//! Snowflake.
//!
//! DataFusion folds an unquoted identifier to lower case, so `select customerNumber` finds no
//! column when a source file's header says `customerNumber`. Before a query is planned, each
//! unquoted word that equals (ignoring case) a mixed-case column of a registered table —
//! and no all-lowercase one, which would make it ambiguous — is quoted with that column's
//! spelling. Keywords, function names and names given with `AS` are left alone (a column
//! named `Date` still needs quotes), as are quoted identifiers and strings.

use std::collections::HashMap;

use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, Tokenizer};

/// `sql` with the unquoted identifiers that name a mixed-case column of the tables
/// registered in `ctx` quoted as that column is spelled (and DuckDB's syntax rewritten,
/// [`crate::duckdb_syntax`]): what every query runs through before planning. SQL that does not tokenize is
/// returned as it is, for the planner to report.
pub async fn resolve_case(ctx: &SessionContext, sql: &str) -> String {
    // DuckDB's syntax first, so that what follows sees SQL DataFusion parses.
    let sql = &crate::duckdb_syntax::rewrite(sql);
    let columns = mixed_case_columns(ctx).await;
    if columns.is_empty() {
        return sql.to_string();
    }
    quote_columns(sql, &columns)
}

/// Mixed-case column names of every registered table, by their lower-case spelling; a
/// spelling shared by two different columns (or by an all-lowercase one) is left out.
async fn mixed_case_columns(ctx: &SessionContext) -> HashMap<String, String> {
    let mut spellings: HashMap<String, Option<String>> = HashMap::new();
    let catalogs = ctx.state().catalog_list().clone();
    for catalog_name in catalogs.catalog_names() {
        let Some(catalog) = catalogs.catalog(&catalog_name) else {
            continue;
        };
        for schema_name in catalog.schema_names() {
            let Some(schema) = catalog.schema(&schema_name) else {
                continue;
            };
            for table_name in schema.table_names() {
                let Ok(Some(table)) = schema.table(&table_name).await else {
                    continue;
                };
                for field in table.schema().fields() {
                    let name = field.name();
                    let lower = name.to_lowercase();
                    let spelling = (lower != *name).then(|| name.clone());
                    spellings
                        .entry(lower)
                        .and_modify(|known| {
                            if *known != spelling {
                                *known = None;
                            }
                        })
                        .or_insert(spelling);
                }
            }
        }
    }
    spellings
        .into_iter()
        .filter_map(|(lower, spelling)| Some((lower, spelling?)))
        .collect()
}

/// `name` as a quoted SQL identifier, whatever it holds.
pub fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Byte offsets of the token locations of one SQL text (lines, and characters within a
/// line, counted from 1).
pub(crate) struct TokenOffsets<'a> {
    sql: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> TokenOffsets<'a> {
    pub(crate) fn new(sql: &'a str) -> TokenOffsets<'a> {
        let line_starts = std::iter::once(0)
            .chain(sql.match_indices('\n').map(|(at, _)| at + 1))
            .collect();
        TokenOffsets { sql, line_starts }
    }

    /// The byte offset of `location`, when it is in the text.
    pub(crate) fn of(&self, location: Location) -> Option<usize> {
        let line = usize::try_from(location.line).ok()?.checked_sub(1)?;
        let start = *self.line_starts.get(line)?;
        let skip = usize::try_from(location.column).ok()?.checked_sub(1)?;
        let within = self.sql[start..]
            .char_indices()
            .nth(skip)
            .map_or(self.sql.len() - start, |(at, _)| at);
        Some(start + within)
    }
}

/// Quotes the unquoted, non-keyword words of `sql` found in `columns`.
fn quote_columns(sql: &str, columns: &HashMap<String, String>) -> String {
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize_with_location() else {
        return sql.to_string();
    };
    let offsets = TokenOffsets::new(sql);
    let mut replacements = Vec::new();
    for (index, token) in tokens.iter().enumerate() {
        let Token::Word(word) = &token.token else {
            continue;
        };
        let called = tokens[index + 1..]
            .iter()
            .find(|next| !matches!(next.token, Token::Whitespace(_)))
            .is_some_and(|next| next.token == Token::LParen);
        let aliased = tokens[..index]
            .iter()
            .rev()
            .find(|previous| !matches!(previous.token, Token::Whitespace(_)))
            .is_some_and(|previous| {
                matches!(&previous.token, Token::Word(before) if before.keyword == Keyword::AS)
            });
        if word.quote_style.is_some() || word.keyword != Keyword::NoKeyword || called || aliased {
            continue;
        }
        let Some(spelling) = columns.get(&word.value.to_lowercase()) else {
            continue;
        };
        let (Some(start), Some(end)) = (offsets.of(token.span.start), offsets.of(token.span.end))
        else {
            return sql.to_string();
        };
        if sql.get(start..end) != Some(word.value.as_str()) {
            // Locations that do not point at the word: change nothing rather than guess.
            return sql.to_string();
        }
        replacements.push((start, end, quoted(spelling)));
    }
    let mut resolved = sql.to_string();
    for (start, end, quoted) in replacements.into_iter().rev() {
        resolved.replace_range(start..end, &quoted);
    }
    resolved
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns() -> HashMap<String, String> {
        HashMap::from([
            (
                String::from("customernumber"),
                String::from("customerNumber"),
            ),
            (String::from("ordertotal"), String::from("OrderTotal")),
            (String::from("total"), String::from("Total")),
        ])
    }

    #[test]
    fn unquoted_words_take_the_columns_spelling() {
        let sql = "select customerNumber, c.ORDERTOTAL as total, 'customerNumber' as label\n\
                   from t as c -- customernumber\n\
                   where \"customerNumber\" > 0 and customernumber < 9";
        assert_eq!(
            quote_columns(sql, &columns()),
            "select \"customerNumber\", c.\"OrderTotal\" as total, 'customerNumber' as label\n\
             from t as c -- customernumber\n\
             where \"customerNumber\" > 0 and \"customerNumber\" < 9"
        );
    }

    #[test]
    fn other_sql_is_unchanged() {
        let sql = "select naïve, id, total (x) from t where x = 'é' -- customer";
        assert_eq!(quote_columns(sql, &columns()), sql);
        assert_eq!(
            quote_columns("select 'unterminated", &columns()),
            "select 'unterminated"
        );
    }

    #[tokio::test]
    async fn registered_tables_decide_and_ambiguity_leaves_words_alone() {
        let ctx = SessionContext::new();
        ctx.sql("create table a as select 1 as \"customerNumber\", 2 as \"Region\"")
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        ctx.sql("create table b as select 3 as region")
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        let sql = resolve_case(&ctx, "select customernumber, region from a").await;
        assert_eq!(sql, "select \"customerNumber\", region from a");
        let batches = ctx
            .sql(&sql.replace("region", "\"Region\""))
            .await
            .unwrap_or_else(|err| panic!("{err}"))
            .collect()
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(batches[0].num_rows(), 1);
    }
}
