//! Queries a template runs while compiling — `run_query(sql)`, `{% call statement(name,
//! fetch_result=True) %}` with `load_result(name)` — answered by the warehouse through a
//! [`CompileQueries`] the caller of the compiler provides. Packages use them for values a
//! model's SQL depends on: the number of days a date spine spans, a column's distinct values.
//!
//! The result is a table shaped as dbt's (agate) tables are used: `.columns[i].values()`,
//! `.rows`, `.column_names`, iteration over rows, and `load_result(name)['data']` (a list of row
//! tuples) or `['table']`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use minijinja::value::{Enumerator, Kwargs, Object, ObjectRepr, Rest, from_args};
use minijinja::{Error, ErrorKind, State, Value};

/// Rows a compile-time query returned.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryTable {
    /// Column names, in order.
    pub columns: Vec<String>,
    /// Rows, each with one value per column.
    pub rows: Vec<Vec<serde_json::Value>>,
}

/// What answers compile-time queries: the warehouse, through the engine.
pub trait CompileQueries: Send + Sync + fmt::Debug {
    /// Runs `sql` and returns its rows.
    ///
    /// # Errors
    /// Returns the engine's error message.
    fn query(&self, sql: &str) -> Result<QueryTable, String>;

    /// The columns (name and SQL type) of the warehouse table `schema.identifier`, or `None`
    /// when there is no such table.
    ///
    /// # Errors
    /// Returns the message of a warehouse that cannot be read.
    fn columns(
        &self,
        schema: &str,
        identifier: &str,
    ) -> Result<Option<Vec<(String, String)>>, String>;
}

/// The render-state extension holding the compile-time query runner (if any) and the results
/// of the render's named `statement` blocks.
#[derive(Default)]
pub(super) struct Statements {
    results: BTreeMap<String, Value>,
}

/// The runner of one compile, reachable from every function.
#[derive(Debug, Clone)]
pub(super) struct Runner(pub Option<Arc<dyn CompileQueries>>);

fn no_runner(function: &str) -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!(
            "{function}() queries the warehouse while compiling, which this command cannot do; run it through `strata compile`, `run` or `build`, or compute the values in the model's SQL"
        ),
    )
}

fn run(runner: &Runner, function: &str, sql: &str) -> Result<Value, Error> {
    let queries = runner.0.as_ref().ok_or_else(|| no_runner(function))?;
    let table = queries.query(sql.trim()).map_err(|message| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("{function}(): the query failed: {message}"),
        )
    })?;
    Ok(Value::from_object(TableValue(table)))
}

/// `run_query(sql)`: the query's rows as a table.
pub(super) fn run_query(runner: &Runner, sql: &str) -> Result<Value, Error> {
    run(runner, "run_query", sql)
}

/// `{% call statement(name, fetch_result=False, auto_begin=True) %}sql{% endcall %}`: runs the
/// block's SQL and keeps the result for `load_result(name)`.
pub(super) fn statement(
    runner: &Runner,
    state: &mut State,
    args: Rest<Value>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let name: String = match args.first() {
        Some(name) => name.to_string(),
        None => kwargs
            .get::<Option<String>>("name")?
            .unwrap_or_else(|| String::from("main")),
    };
    let _ = kwargs.get::<Option<Value>>("fetch_result")?;
    let _ = kwargs.get::<Option<Value>>("auto_begin")?;
    let _ = kwargs.get::<Option<Value>>("language")?;
    let caller: Value = kwargs.get("caller")?;
    kwargs.assert_all_used()?;
    let sql = caller.call(state, &[])?.to_string();
    let table = run(runner, "statement", &sql)?;
    let result = BTreeMap::from([
        ("data", table.get_attr("rows")?),
        ("table", table),
        ("response", Value::from("OK")),
    ]);
    state
        .get_or_insert_extension(Statements::default())
        .results
        .insert(name, Value::from(minijinja::value::Serde(&result)));
    Ok(Value::from(""))
}

/// `load_result(name)`: a `statement` block's result, or none.
pub(super) fn load_result(state: &State, name: String) -> Value {
    state
        .get_extension::<Statements>()
        .and_then(|statements| statements.results.get(&name).cloned())
        .unwrap_or(Value::from(()))
}

/// A query's rows as dbt's templates read them.
#[derive(Debug)]
struct TableValue(QueryTable);

impl TableValue {
    fn row(&self, index: usize) -> Option<Value> {
        self.0.rows.get(index).map(|row| {
            Value::from_object(RowValue {
                columns: self.0.columns.clone(),
                values: row
                    .iter()
                    .map(|v| Value::from(minijinja::value::Serde(v)))
                    .collect(),
            })
        })
    }
}

impl Object for TableValue {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        if let Some(index) = key.as_usize() {
            return self.row(index);
        }
        match key.as_str()? {
            "rows" => Some(Value::from(
                (0..self.0.rows.len())
                    .filter_map(|i| self.row(i))
                    .collect::<Vec<_>>(),
            )),
            "column_names" => Some(Value::from(self.0.columns.clone())),
            "columns" => Some(Value::from(
                (0..self.0.columns.len())
                    .map(|column| {
                        Value::from_object(ColumnValue {
                            name: self.0.columns[column].clone(),
                            values: self
                                .0
                                .rows
                                .iter()
                                .map(|row| {
                                    row.get(column)
                                        .map(|v| Value::from(minijinja::value::Serde(v)))
                                        .unwrap_or(Value::from(()))
                                })
                                .collect(),
                        })
                    })
                    .collect::<Vec<_>>(),
            )),
            _ => None,
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values((0..self.0.rows.len()).filter_map(|i| self.row(i)).collect())
    }
}

/// One row: by position, by column name, or iterated.
#[derive(Debug)]
struct RowValue {
    columns: Vec<String>,
    values: Vec<Value>,
}

impl Object for RowValue {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        if let Some(index) = key.as_usize() {
            return self.values.get(index).cloned();
        }
        let name = key.as_str()?;
        let index = self.columns.iter().position(|column| column == name)?;
        self.values.get(index).cloned()
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.values.clone())
    }
}

/// One column: `.name` and `.values()`.
#[derive(Debug)]
struct ColumnValue {
    name: String,
    values: Vec<Value>,
}

impl Object for ColumnValue {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match key.as_str()? {
            "name" => Some(Value::from(self.name.clone())),
            _ => None,
        }
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        let () = from_args(args)?;
        match method {
            "values" => Ok(Value::from(self.values.clone())),
            other => Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("a query's column has no method '{other}'; use .values()"),
            )),
        }
    }
}
