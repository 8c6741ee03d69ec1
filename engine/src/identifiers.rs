//! Unquoted identifiers keep the spelling DuckDB gives them: a mixed-case column is found by
//! any spelling, and a mixed-case alias names its output column as written.
//!
//! DataFusion folds an unquoted identifier to lower case, so `select customerNumber` finds no
//! column when a source file's header says `customerNumber`, and `sum(x) as TotalSales`
//! names its column `totalsales` where DuckDB (and so dbt-duckdb) names it `TotalSales`.
//! Before a query is planned, each unquoted word that equals (ignoring case) a mixed-case
//! column of a registered table, or a mixed-case alias the query gives (with `AS`, or right
//! after an expression: `sum(x) Total`), is quoted with that spelling — the alias where it
//! is given and wherever the query refers to it.
//! A name spelled two ways (or also all in lower case), keywords, function names, a type
//! after `AS` in a cast, quoted identifiers and strings are left alone (a column named
//! `Date` still needs quotes), and a name given with `AS` that is a column's too keeps the
//! spelling written there (`customerNumber as CustomerNumber` outputs `CustomerNumber`).

use std::collections::{HashMap, HashSet};

use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};

/// `sql` with the unquoted identifiers that name a mixed-case column of the tables
/// registered in `ctx` quoted as that column is spelled (and DuckDB's syntax rewritten,
/// [`crate::duckdb_syntax`]; unaliased expressions named as DuckDB names them,
/// [`crate::output_names`]): what every query runs through before planning. SQL that does not tokenize is
/// returned as it is, for the planner to report.
pub async fn resolve_case(ctx: &SessionContext, sql: &str) -> String {
    // DuckDB's syntax first, so that what follows sees SQL DataFusion parses.
    let sql = &crate::duckdb_syntax::rewrite(sql);
    let (columns, known) = registered_columns(ctx).await;
    let sql = quote_spellings(sql, &columns, &known);
    // Last, so that the names are printed from the spellings just resolved.
    crate::output_names::name_like_duckdb(&sql)
}

/// Mixed-case column names of every registered table, by their lower-case spelling (a
/// spelling shared by two different columns, or by an all-lowercase one, is left out), and
/// the lower-case spelling of every column and table.
async fn registered_columns(ctx: &SessionContext) -> (HashMap<String, String>, HashSet<String>) {
    let mut spellings: HashMap<String, Option<String>> = HashMap::new();
    let mut tables = HashSet::new();
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
                tables.insert(table_name.to_lowercase());
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
    let known = spellings.keys().cloned().chain(tables).collect();
    let mixed = spellings
        .into_iter()
        .filter_map(|(lower, spelling)| Some((lower, spelling?)))
        .collect();
    (mixed, known)
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

/// Functions whose `AS` is followed by a type, not an alias.
const CASTS: [&str; 3] = ["cast", "try_cast", "safe_cast"];

/// One word of the query and what surrounds it.
struct WordAt<'t> {
    value: &'t str,
    lower: String,
    /// The word can be an identifier of the query: unquoted, not a keyword, not a function.
    plain: bool,
    /// The word names a common table expression (`name as (…)`).
    names_relation: bool,
    /// The word follows `AS` outside a cast, or an expression (an alias without `AS`): a
    /// name the query gives.
    given: bool,
    start: Location,
    end: Location,
}

/// The words of the tokens, with whether each is a plain identifier and whether the query
/// gives it as a name (after `AS`, except the type of a `cast(… as T)`, or right after an
/// expression).
fn words(tokens: &[TokenWithSpan]) -> Vec<WordAt<'_>> {
    let significant: Vec<&TokenWithSpan> = tokens
        .iter()
        .filter(|token| !matches!(token.token, Token::Whitespace(_)))
        .collect();
    // For each open parenthesis, whether it opened a cast.
    let mut open_casts: Vec<bool> = Vec::new();
    let mut found = Vec::new();
    for (index, token) in significant.iter().enumerate() {
        let previous = index.checked_sub(1).map(|at| &significant[at].token);
        match &token.token {
            Token::LParen => open_casts.push(matches!(
                previous,
                Some(Token::Word(word)) if CASTS.contains(&word.value.to_lowercase().as_str())
            )),
            Token::RParen => {
                open_casts.pop();
            }
            Token::Word(word) => {
                let called = significant
                    .get(index + 1)
                    .is_some_and(|next| next.token == Token::LParen);
                let after_as =
                    matches!(previous, Some(Token::Word(before)) if before.keyword == Keyword::AS);
                let after_expression = previous.is_some_and(ends_expression)
                    && significant
                        .get(index + 1)
                        .is_none_or(|next| next.token != Token::Period);
                let in_cast = open_casts.last().copied().unwrap_or(false);
                let names_relation = matches!(
                    significant.get(index + 1).map(|next| &next.token),
                    Some(Token::Word(next)) if next.keyword == Keyword::AS
                ) && significant
                    .get(index + 2)
                    .is_some_and(|next| next.token == Token::LParen);
                found.push(WordAt {
                    value: &word.value,
                    lower: word.value.to_lowercase(),
                    plain: word.quote_style.is_none()
                        && word.keyword == Keyword::NoKeyword
                        && !called,
                    names_relation,
                    given: (after_as && !in_cast) || after_expression,
                    start: token.span.start,
                    end: token.span.end,
                });
            }
            _ => {}
        }
    }
    found
}

/// Whether `token` can end an expression, so that a plain word after it is an alias given
/// without `AS` (`sum(x) Total`, `'a' Label`, `col Alias`, `case … end Kind`).
fn ends_expression(token: &Token) -> bool {
    match token {
        Token::RParen
        | Token::Number(..)
        | Token::SingleQuotedString(_)
        | Token::DoubleQuotedString(_) => true,
        Token::Word(word) => {
            word.quote_style.is_some()
                || word.keyword == Keyword::NoKeyword
                || word.keyword == Keyword::END
        }
        _ => false,
    }
}

/// Mixed-case names the query gives with `AS` or as an alias without it, by their lower-case spelling: only those
/// given with one spelling, never all in lower case, and naming no registered column or
/// table (`known`, lower case) nor a common table expression of the query, in any spelling
/// (`from schema.Name` must keep finding table `name`).
fn given_spellings(words: &[WordAt<'_>], known: &HashSet<String>) -> HashMap<String, String> {
    let relations: HashSet<&str> = words
        .iter()
        .filter(|word| word.names_relation)
        .map(|word| word.lower.as_str())
        .collect();
    let mut spellings: HashMap<String, Option<String>> = HashMap::new();
    for word in words.iter().filter(|word| word.given && word.plain) {
        let spelling = (word.lower != word.value).then(|| word.value.to_string());
        spellings
            .entry(word.lower.clone())
            .and_modify(|known| {
                if *known != spelling {
                    *known = None;
                }
            })
            .or_insert(spelling);
    }
    spellings
        .into_iter()
        .filter(|(lower, _)| !known.contains(lower) && !relations.contains(lower.as_str()))
        .filter_map(|(lower, spelling)| Some((lower, spelling?)))
        .collect()
}

/// Quotes the plain words of `sql` that name a mixed-case column of `columns` (except where
/// `AS` gives a name) or a mixed-case alias the query gives; `known` holds every registered
/// column's lower-case spelling.
fn quote_spellings(
    sql: &str,
    columns: &HashMap<String, String>,
    known: &HashSet<String>,
) -> String {
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize_with_location() else {
        return sql.to_string();
    };
    let words = words(&tokens);
    let given = given_spellings(&words, known);
    if columns.is_empty() && given.is_empty() {
        return sql.to_string();
    }
    let offsets = TokenOffsets::new(sql);
    let mut replacements = Vec::new();
    for word in words.iter().filter(|word| word.plain) {
        let spelling = match given.get(&word.lower) {
            Some(spelling) => spelling,
            // A mixed-case column renamed in another case (`customerNumber as
            // CustomerNumber`): the output takes the name as written.
            None if word.given && columns.contains_key(&word.lower) && word.lower != word.value => {
                word.value
            }
            None if word.given => continue,
            None => match columns.get(&word.lower) {
                Some(spelling) => spelling,
                None => continue,
            },
        };
        let (Some(start), Some(end)) = (offsets.of(word.start), offsets.of(word.end)) else {
            return sql.to_string();
        };
        if sql.get(start..end) != Some(word.value) {
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

    fn known() -> HashSet<String> {
        columns().into_keys().chain([String::from("id")]).collect()
    }

    #[test]
    fn unquoted_words_take_the_columns_spelling() {
        let sql = "select customerNumber, c.ORDERTOTAL as total, 'customerNumber' as label\n\
                   from t as c -- customernumber\n\
                   where \"customerNumber\" > 0 and customernumber < 9";
        assert_eq!(
            quote_spellings(sql, &columns(), &known()),
            "select \"customerNumber\", c.\"OrderTotal\" as total, 'customerNumber' as label\n\
             from t as c -- customernumber\n\
             where \"customerNumber\" > 0 and \"customerNumber\" < 9"
        );
    }

    #[test]
    fn other_sql_is_unchanged() {
        let sql = "select naïve, id, total (x) from t where x = 'é' -- customer";
        assert_eq!(quote_spellings(sql, &columns(), &known()), sql);
        assert_eq!(
            quote_spellings("select 'unterminated", &columns(), &known()),
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

    #[test]
    fn aliases_keep_their_spelling_where_given_and_where_used() {
        let sql = "select sum(x) as TotalSales, y as Region_Name, z as lower_name, w Plain_Alias,\n\
                   customernumber as CustomerNumber\n\
                   from t Tbl group by region_name, tbl.w order by TOTALSALES, plain_alias";
        assert_eq!(
            quote_spellings(sql, &columns(), &known()),
            "select sum(x) as \"TotalSales\", y as \"Region_Name\", z as lower_name, w \"Plain_Alias\",\n\
             \"customerNumber\" as \"CustomerNumber\"\n\
             from t \"Tbl\" group by \"Region_Name\", \"Tbl\".w order by \"TotalSales\", \"Plain_Alias\""
        );
    }

    #[test]
    fn cast_types_keywords_and_names_spelled_two_ways_or_of_lowercase_columns_are_left_alone() {
        let sql = "select cast(x as MyType) as Amount, try_cast(y as Decimal(10, 2)) as Date, \
                   a as Twice, b as TWICE, id as Id, c as Total from t";
        assert_eq!(
            quote_spellings(sql, &columns(), &known()),
            "select cast(x as MyType) as \"Amount\", try_cast(y as Decimal(10, 2)) as Date, \
             a as Twice, b as TWICE, id as Id, c as \"Total\" from t"
        );
    }

    #[test]
    fn an_alias_named_like_a_table_or_common_table_expression_is_left_alone() {
        let sql = "with Orders as (select 1 as x), items as (select 2 as y)\n\
                   select o.x as Items, i.y Orders from main.orders o, items i";
        assert_eq!(quote_spellings(sql, &columns(), &known()), sql);
    }

    #[tokio::test]
    async fn a_mixed_case_alias_names_the_output_column_and_can_be_referred_to() {
        let ctx = SessionContext::new();
        ctx.sql("create table t as select 1 as a, 'x' as b")
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        let sql = resolve_case(
            &ctx,
            "with s as (select a as OrderCount, b as CustomerName from t)\n\
             select customername, ORDERCOUNT + 1 as NextCount from s order by OrderCount",
        )
        .await;
        let frame = ctx.sql(&sql).await.unwrap_or_else(|err| panic!("{err}"));
        let names: Vec<String> = frame
            .schema()
            .fields()
            .iter()
            .map(|field| field.name().clone())
            .collect();
        assert_eq!(names, ["CustomerName", "NextCount"]);
    }
}
