//! DuckDB syntax DataFusion's parser does not take, rewritten before planning:
//! `interval (expr) day` — a computed count in parentheses and a bare unit — becomes
//! `cast(concat(cast((expr) as varchar), ' day') as interval)`.

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

/// Units DuckDB takes after an interval's count.
const UNITS: [&str; 16] = [
    "year", "years", "quarter", "quarters", "month", "months", "week", "weeks", "day", "days",
    "hour", "hours", "minute", "minutes", "second", "seconds",
];

/// `sql` with DuckDB's `interval (expr) unit` rewritten; anything else (or SQL that does not
/// tokenize) unchanged.
pub fn rewrite(sql: &str) -> String {
    if !sql.to_ascii_lowercase().contains("interval") {
        return sql.to_string();
    }
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize_with_location() else {
        return sql.to_string();
    };
    let locations = crate::identifiers::TokenOffsets::new(sql);
    let offsets: Option<Vec<usize>> = tokens
        .iter()
        .map(|token| locations.of(token.span.start))
        .collect();
    let Some(offsets) = offsets else {
        return sql.to_string();
    };
    let mut replacements = Vec::new();
    let mut index = 0;
    while index < tokens.len() {
        if let Some((open, close, unit)) = interval_at(&tokens, index) {
            let end = offsets.get(unit + 1).copied().unwrap_or(sql.len());
            let inner = &sql[offsets[open] + 1..offsets[close]];
            let Token::Word(word) = &tokens[unit].token else {
                break;
            };
            let unit_name = word.value.to_ascii_lowercase();
            replacements.push((
                offsets[index],
                end,
                format!(
                    "cast(concat(cast(({inner}) as varchar), ' {}') as interval)",
                    unit_name.trim_end_matches('s')
                ),
            ));
            index = unit + 1;
        } else {
            index += 1;
        }
    }
    let mut rewritten = sql.to_string();
    for (start, end, text) in replacements.into_iter().rev() {
        rewritten.replace_range(start..end, &text);
    }
    rewritten
}

/// At an `INTERVAL` word followed by a parenthesized expression and a unit: the indexes of
/// the parentheses and the unit.
fn interval_at(tokens: &[TokenWithSpan], index: usize) -> Option<(usize, usize, usize)> {
    let Token::Word(word) = &tokens[index].token else {
        return None;
    };
    if word.keyword != Keyword::INTERVAL {
        return None;
    }
    let next = |from: usize| {
        (from..tokens.len()).find(|&i| !matches!(tokens[i].token, Token::Whitespace(_)))
    };
    let open = next(index + 1)?;
    if tokens[open].token != Token::LParen {
        return None;
    }
    let mut depth = 0usize;
    let close = (open..tokens.len()).find(|&i| {
        match tokens[i].token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            _ => {}
        }
        depth == 0
    })?;
    let unit = next(close + 1)?;
    match &tokens[unit].token {
        Token::Word(unit_word)
            if unit_word.quote_style.is_none()
                && UNITS.contains(&unit_word.value.to_ascii_lowercase().as_str()) =>
        {
            Some((open, close, unit))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parenthesized_interval_counts_become_casts() {
        assert_eq!(
            rewrite(
                "select current_date + interval (30) day as due,\n  ts - INTERVAL (n * 2) HOURS from t"
            ),
            "select current_date + cast(concat(cast((30) as varchar), ' day') as interval) as due,\n  ts - cast(concat(cast((n * 2) as varchar), ' hour') as interval) from t"
        );
        for unchanged in [
            "select interval '1 day', interval 2 day, 'interval (3) day'",
            "select 1",
            "select interval (3) parsecs",
        ] {
            assert_eq!(rewrite(unchanged), unchanged);
        }
    }

    #[tokio::test]
    async fn the_rewrite_plans_and_answers_as_duckdb() {
        let (ctx, _) = crate::session::session(&crate::session::EngineConfig::default())
            .unwrap_or_else(|err| panic!("{err}"));
        let sql = rewrite("select date '2024-01-30' + interval (1 + 1) day as later");
        let batches = ctx
            .sql(&sql)
            .await
            .unwrap_or_else(|err| panic!("{err}"))
            .collect()
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap_or_else(|err| panic!("{err}"))
            .to_string();
        assert!(text.contains("2024-02-01"), "{text}");
    }
}
