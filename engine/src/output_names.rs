//! The columns of unaliased expressions are named as DuckDB names them.
//!
//! DataFusion names the column of `sum(amount)` after the expression it planned, with its
//! columns qualified (`sum(orders.amount)`), and `count(*)` as written; DuckDB — and so a
//! table dbt-duckdb builds — names them `sum(amount)` and `count_star()`. Before a query is
//! planned, each unaliased expression of its outermost select list whose DuckDB name Strata
//! can spell gets that name as an alias: columns, numbers and strings, function calls (with
//! `DISTINCT` and `FILTER`), arithmetic, comparisons, `AND`/`OR`, `IS [NOT] NULL` and
//! `BETWEEN`, printed as DuckDB 1.5 prints them (`(x + 1)`, `count(DISTINCT x)`,
//! `sum(x) FILTER (WHERE (x > 0))`). Other expressions — casts, `CASE`, window functions,
//! subqueries, names DuckDB would quote — keep DataFusion's name, as does a name that two
//! columns of the output would share.

use std::collections::HashSet;

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, DuplicateTreatment, Expr, Function, FunctionArg, FunctionArgExpr,
    FunctionArguments, Ident, ObjectNamePart, Query, Select, SelectItem, SetExpr, Statement,
    UnaryOperator, Value,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::{ALL_KEYWORDS, Keyword};
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

use crate::identifiers::{TokenOffsets, quoted};

/// `sql` with DuckDB's name given as an alias to each unaliased expression of its outermost
/// select list that Strata can name; `sql` unchanged when it names none, or does not parse
/// (for the planner to report).
pub fn name_like_duckdb(sql: &str) -> String {
    // Tokenized once: the parser reads these tokens, and their spans place the aliases.
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize_with_location() else {
        return sql.to_string();
    };
    let Some(names) = select_list_names(tokens.clone()) else {
        return sql.to_string();
    };
    if names.iter().all(Option::is_none) {
        return sql.to_string();
    }
    let Some(ends) = select_item_ends(sql, &tokens) else {
        return sql.to_string();
    };
    if ends.len() != names.len() {
        // The tokens and the syntax tree disagree on the list: change nothing.
        return sql.to_string();
    }
    let mut named = sql.to_string();
    for (end, name) in ends.into_iter().zip(names).rev() {
        if let Some(name) = name {
            named.insert_str(end, &format!(" as {}", quoted(&name)));
        }
    }
    named
}

/// For each item of the outermost select list (the leftmost of a `UNION`), the DuckDB name
/// to give it, or `None` where it has an alias, is a column or a wildcard, or cannot be
/// named (or its name is taken); `None` for anything but one query.
fn select_list_names(tokens: Vec<TokenWithSpan>) -> Option<Vec<Option<String>>> {
    let statements = Parser::new(&GenericDialect {})
        .with_tokens_with_locations(tokens)
        .parse_statements()
        .ok()?;
    let [Statement::Query(query)] = statements.as_slice() else {
        return None;
    };
    let select = leftmost_select(query)?;
    let mut taken: HashSet<String> = HashSet::new();
    let mut names: Vec<Option<String>> = Vec::new();
    for item in &select.projection {
        let name = match item {
            SelectItem::UnnamedExpr(Expr::Identifier(ident)) => {
                taken.insert(ident.value.to_lowercase());
                None
            }
            SelectItem::UnnamedExpr(Expr::CompoundIdentifier(parts)) => {
                if let Some(last) = parts.last() {
                    taken.insert(last.value.to_lowercase());
                }
                None
            }
            SelectItem::UnnamedExpr(expr) => render(expr),
            SelectItem::ExprWithAlias { alias, .. } => {
                taken.insert(alias.value.to_lowercase());
                None
            }
            _ => None,
        };
        names.push(name);
    }
    // A name two columns would share stays DataFusion's (which may refuse the duplicate).
    let mut seen: HashSet<String> = HashSet::new();
    let repeated: HashSet<String> = names
        .iter()
        .flatten()
        .map(|name| name.to_lowercase())
        .filter(|name| !seen.insert(name.clone()))
        .collect();
    Some(
        names
            .into_iter()
            .map(|name| {
                name.filter(|name| {
                    let lower = name.to_lowercase();
                    !taken.contains(&lower) && !repeated.contains(&lower)
                })
            })
            .collect(),
    )
}

/// The select whose list names a query's columns: the query's own, or the leftmost of its
/// set operations; `None` when that is a parenthesized query or something else.
fn leftmost_select(query: &Query) -> Option<&Select> {
    let mut body = query.body.as_ref();
    loop {
        match body {
            SetExpr::Select(select) => return Some(select),
            SetExpr::SetOperation { left, .. } => body = left.as_ref(),
            _ => return None,
        }
    }
}

/// How DuckDB prints `expr` as a column name, for the expressions Strata knows the printing
/// of.
fn render(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Identifier(ident) => name_part(ident),
        Expr::CompoundIdentifier(parts) => {
            let parts: Option<Vec<String>> = parts.iter().map(name_part).collect();
            Some(parts?.join("."))
        }
        Expr::Value(value) => literal(&value.value),
        Expr::Nested(inner) => render(inner),
        Expr::BinaryOp { left, op, right } => Some(format!(
            "({} {} {})",
            render(left)?,
            operator(op)?,
            render(right)?
        )),
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match expr.as_ref() {
            Expr::Value(value) => Some(format!("-{}", literal(&value.value)?)),
            Expr::Nested(inner) if matches!(inner.as_ref(), Expr::Value(_)) => {
                render(&Expr::UnaryOp {
                    op: UnaryOperator::Minus,
                    expr: inner.clone(),
                })
            }
            other => Some(format!("-({})", render(other)?)),
        },
        Expr::IsNull(inner) => Some(format!("({} IS NULL)", render(inner)?)),
        Expr::IsNotNull(inner) => Some(format!("({} IS NOT NULL)", render(inner)?)),
        Expr::Between {
            expr,
            negated: false,
            low,
            high,
        } => Some(format!(
            "({} BETWEEN {} AND {})",
            render(expr)?,
            render(low)?,
            render(high)?
        )),
        Expr::Function(function) => call(function),
        _ => None,
    }
}

/// A column or qualifier as DuckDB prints it: as written when it needs no quotes; `None`
/// for a name DuckDB would quote (a keyword, or characters beyond letters, digits and `_`).
fn name_part(ident: &Ident) -> Option<String> {
    let name = &ident.value;
    let simple = name
        .chars()
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && name
            .chars()
            .all(|char| char.is_ascii_alphanumeric() || char == '_');
    let keyword = ALL_KEYWORDS
        .binary_search(&name.to_uppercase().as_str())
        .is_ok();
    (simple && !keyword).then(|| name.clone())
}

/// A number as written (`2.50`, `.5`; not exponents, which DuckDB prints as a double) or a
/// string in single quotes.
fn literal(value: &Value) -> Option<String> {
    match value {
        Value::Number(number, _) => {
            let number = number.to_string();
            let plain = !number.is_empty()
                && number
                    .chars()
                    .all(|char| char.is_ascii_digit() || char == '.')
                && number.matches('.').count() <= 1;
            plain.then_some(number)
        }
        Value::SingleQuotedString(text) => Some(format!("'{}'", text.replace('\'', "''"))),
        _ => None,
    }
}

/// The binary operators DuckDB prints between their operands as written (`<>` as `!=`).
fn operator(op: &BinaryOperator) -> Option<&'static str> {
    Some(match op {
        BinaryOperator::Plus => "+",
        BinaryOperator::Minus => "-",
        BinaryOperator::Multiply => "*",
        BinaryOperator::Divide => "/",
        BinaryOperator::Modulo => "%",
        BinaryOperator::StringConcat => "||",
        BinaryOperator::Gt => ">",
        BinaryOperator::Lt => "<",
        BinaryOperator::GtEq => ">=",
        BinaryOperator::LtEq => "<=",
        BinaryOperator::Eq => "=",
        BinaryOperator::NotEq => "!=",
        BinaryOperator::And => "AND",
        BinaryOperator::Or => "OR",
        _ => return None,
    })
}

/// A function call as DuckDB prints it: the name in lower case (`COALESCE` in upper case, a
/// special form in DuckDB), `count(*)` as `count_star()`, `DISTINCT` and `FILTER (WHERE …)`;
/// `None` for a window function, ordered or named arguments, or a qualified name.
fn call(function: &Function) -> Option<String> {
    if function.over.is_some()
        || function.null_treatment.is_some()
        || !function.within_group.is_empty()
        || function.uses_odbc_syntax
        || !matches!(function.parameters, FunctionArguments::None)
    {
        return None;
    }
    let [ObjectNamePart::Identifier(name)] = function.name.0.as_slice() else {
        return None;
    };
    let name = name_part(name).or_else(|| {
        // Function names that are keywords are still printed bare (`left(s, 2)`).
        name.quote_style.is_none().then(|| name.value.clone())
    })?;
    let name = name.to_lowercase();
    let list = match &function.args {
        // `current_date`: a function without parentheses.
        FunctionArguments::None => return Some(name),
        FunctionArguments::List(list) => list,
        FunctionArguments::Subquery(_) => return None,
    };
    if !list.clauses.is_empty() {
        return None;
    }
    let distinct = match list.duplicate_treatment {
        None | Some(DuplicateTreatment::All) => "",
        Some(DuplicateTreatment::Distinct) => "DISTINCT ",
    };
    let filter = match &function.filter {
        Some(condition) => format!(" FILTER (WHERE {})", render(condition)?),
        None => String::new(),
    };
    if name == "count"
        && distinct.is_empty()
        && matches!(
            list.args.as_slice(),
            [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)]
        )
    {
        return Some(format!("count_star(){filter}"));
    }
    let args: Option<Vec<String>> = list
        .args
        .iter()
        .map(|arg| match arg {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(expr)) => render(expr),
            _ => None,
        })
        .collect();
    let name = if name == "coalesce" {
        String::from("COALESCE")
    } else {
        name
    };
    Some(format!("{name}({distinct}{}){filter}", args?.join(", ")))
}

/// Byte offsets where each item of the first select list at the outermost level ends (after
/// its last token) among `tokens`, the text's, or `None` when there is no such list.
fn select_item_ends(sql: &str, tokens: &[TokenWithSpan]) -> Option<Vec<usize>> {
    let offsets = TokenOffsets::new(sql);
    let mut depth = 0usize;
    let mut in_list = false;
    let mut last_end: Option<usize> = None;
    let mut ends = Vec::new();
    for token in tokens {
        match &token.token {
            Token::Whitespace(_) => continue,
            Token::LParen => depth += 1,
            Token::RParen => {
                if depth == 0 {
                    break;
                }
                depth -= 1;
            }
            Token::Word(word) if depth == 0 && word.quote_style.is_none() => {
                if !in_list && word.keyword == Keyword::SELECT {
                    in_list = true;
                    last_end = None;
                    continue;
                }
                if in_list && ends_select_list(word.keyword) {
                    break;
                }
            }
            Token::Comma if depth == 0 && in_list => {
                ends.push(last_end?);
                last_end = None;
                continue;
            }
            Token::SemiColon if depth == 0 => break,
            _ => {}
        }
        if in_list {
            last_end = Some(offsets.of(token.span.end)?);
        }
    }
    if !in_list {
        return None;
    }
    ends.push(last_end?);
    Some(ends)
}

/// Keywords after which a select list is over.
fn ends_select_list(keyword: Keyword) -> bool {
    matches!(
        keyword,
        Keyword::FROM
            | Keyword::WHERE
            | Keyword::GROUP
            | Keyword::HAVING
            | Keyword::ORDER
            | Keyword::LIMIT
            | Keyword::OFFSET
            | Keyword::UNION
            | Keyword::EXCEPT
            | Keyword::INTERSECT
            | Keyword::QUALIFY
            | Keyword::WINDOW
            | Keyword::INTO
    )
}

#[cfg(test)]
mod tests {
    use super::name_like_duckdb;

    #[test]
    fn unaliased_expressions_take_duckdbs_names() {
        let sql = "select region, sum(amount), COUNT(*), count(distinct o.customer_id),\n  \
                   amount + 1, (amount + tax) * 2, amount > 1 and tax <> 0, -amount, -2, 'it''s',\n  \
                   avg(amount) filter (where amount > 0), coalesce(tax, 0), current_date, 2.50\n\
                   from orders o group by region";
        let named = name_like_duckdb(sql);
        for alias in [
            r#"sum(amount) as "sum(amount)""#,
            r#"COUNT(*) as "count_star()""#,
            r#"count(distinct o.customer_id) as "count(DISTINCT o.customer_id)""#,
            r#"amount + 1 as "(amount + 1)""#,
            r#"(amount + tax) * 2 as "((amount + tax) * 2)""#,
            r#"amount > 1 and tax <> 0 as "((amount > 1) AND (tax != 0))""#,
            r#"-amount as "-(amount)""#,
            r#"-2 as "-2""#,
            r#"'it''s' as "'it''s'""#,
            r#"filter (where amount > 0) as "avg(amount) FILTER (WHERE (amount > 0))""#,
            r#"coalesce(tax, 0) as "COALESCE(tax, 0)""#,
            r#"current_date as "current_date""#,
            r#"2.50 as "2.50""#,
        ] {
            assert!(named.contains(alias), "{alias} in {named}");
        }
        assert!(named.starts_with("select region, "), "{named}");
        assert!(
            named.ends_with("\nfrom orders o group by region"),
            "{named}"
        );
    }

    #[test]
    fn aliases_columns_and_what_duckdb_prints_otherwise_are_left_alone() {
        for sql in [
            "select a, t.b, sum(x) as total, c * 2 d from t",
            "select cast(x as int), case when x > 1 then 1 end, row_number() over () from t",
            "select sum(\"value\"), sum(name), x::date, 1e3 from t",
            "select count(*), count(*) from t",
            "select sum(x), 1 as \"sum(x)\" from t",
            "select * from t",
            "(select sum(x) from t) union all (select sum(y) from u)",
            "select sum(x) from t; select 1",
            "not sql at all (",
        ] {
            assert_eq!(name_like_duckdb(sql), sql);
        }
    }

    #[test]
    fn the_outermost_list_is_named_and_inner_ones_are_not() {
        let sql = "with totals as (select id, sum(x) from t group by id)\n\
                   select id, max(x) from (select id, min(x) as x from totals group by id) s \
                   group by id union all select 1, sum(y) from u";
        let named = name_like_duckdb(sql);
        assert_eq!(
            named,
            "with totals as (select id, sum(x) from t group by id)\n\
             select id, max(x) as \"max(x)\" from (select id, min(x) as x from totals group by id) s \
             group by id union all select 1, sum(y) from u"
        );
    }

    #[test]
    fn distinct_and_comments_keep_their_place() {
        let sql = "select distinct upper(s) -- shout\n, lower(s) /* quiet */ from t";
        assert_eq!(
            name_like_duckdb(sql),
            "select distinct upper(s) as \"upper(s)\" -- shout\n, lower(s) as \"lower(s)\" /* quiet */ from t"
        );
    }
}
