//! `adapter`: what dbt's adapter object answers at compile time. `get_relation` and
//! `get_columns_in_relation` look at the warehouse's tables as they are when compiling.

use std::sync::Arc;

use minijinja::value::{Kwargs, Object, ObjectRepr, from_args};
use minijinja::{Error, ErrorKind, State, Value};

use super::Relation;
use super::namespaces::{MacroCatalog, dispatch};
use super::queries::CompileQueries;

/// The `adapter` global.
#[derive(Debug)]
pub struct Adapter {
    catalog: Arc<MacroCatalog>,
    warehouse: Option<Arc<dyn CompileQueries>>,
}

impl Adapter {
    /// The adapter of a project whose macros `catalog` describes, looking at the warehouse
    /// through `warehouse` (without it, the warehouse methods fail clearly).
    pub fn new(catalog: &Arc<MacroCatalog>, warehouse: Option<Arc<dyn CompileQueries>>) -> Adapter {
        Adapter {
            catalog: catalog.clone(),
            warehouse,
        }
    }

    /// The columns of `relation`'s table, or `None` when it does not exist.
    fn columns(&self, method: &str, relation: &Relation) -> Result<Option<Vec<Value>>, Error> {
        let warehouse = self.warehouse.as_ref().ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "adapter.{method}() looks at the warehouse while compiling, which this command cannot do; run it through `strata compile`, `run` or `build`"
                ),
            )
        })?;
        let columns = warehouse
            .columns(&relation.schema, &relation.identifier)
            .map_err(|message| {
                Error::new(
                    ErrorKind::InvalidOperation,
                    format!("adapter.{method}({relation}): {message}"),
                )
            })?;
        Ok(columns.map(column_values))
    }

    /// `adapter.get_columns_in_relation(relation)`: the columns of its table in the
    /// warehouse; for a table not built yet, its declared columns (a seed's header, a
    /// property file's `columns:`); otherwise no columns for now, and the node is marked to
    /// be compiled again when its parents are built (as dbt compiles each node just before
    /// running it).
    fn get_columns_in_relation(&self, state: &State, args: &[Value]) -> Result<Value, Error> {
        let relation = relation_argument(args)?;
        if let Some(columns) = self.columns("get_columns_in_relation", &relation)? {
            return Ok(Value::from(columns));
        }
        let scope = super::scope(state)?;
        if let Some(columns) = scope.inputs.declared_columns.get(&relation) {
            return Ok(Value::from(column_values(columns.clone())));
        }
        scope.defer(format!(
            "adapter.get_columns_in_relation({relation}) asks for the columns of a table not built yet"
        ));
        Ok(Value::from(Vec::<Value>::new()))
    }

    /// `adapter.get_relation(database=…, schema=…, identifier=…)`: the relation when its
    /// table exists, else none.
    fn get_relation(&self, args: &[Value]) -> Result<Value, Error> {
        let (kwargs,): (Kwargs,) = from_args(args)?;
        let _ = kwargs.get::<Option<Value>>("database")?;
        let schema: String = kwargs.get::<Option<String>>("schema")?.unwrap_or_default();
        let identifier: String = kwargs.get("identifier")?;
        kwargs.assert_all_used()?;
        let relation = Relation::new(schema, identifier);
        Ok(match self.columns("get_relation", &relation)? {
            Some(_) => Value::from_object(relation),
            None => Value::from(()),
        })
    }
}

/// Columns (name, SQL type) as templates see them.
fn column_values(columns: Vec<(String, String)>) -> Vec<Value> {
    columns
        .into_iter()
        .map(|(name, data_type)| Value::from_object(ColumnValue { name, data_type }))
        .collect()
}

/// The relation a method is called with (`ref()`, `source()`, `this`, `api.Relation`).
fn relation_argument(args: &[Value]) -> Result<Relation, Error> {
    args.first()
        .and_then(|value| value.downcast_object_ref::<Relation>().cloned())
        .ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidOperation,
                "expected a relation, such as ref('model') or source('source', 'table')",
            )
        })
}

/// A column as dbt's `Column` shows it to templates: `name` (and `column`), `data_type`
/// (and `dtype`), `quoted`, and `is_string()` / `is_number()` / `is_float()` /
/// `is_integer()` / `is_numeric()`.
#[derive(Debug)]
struct ColumnValue {
    name: String,
    data_type: String,
}

impl Object for ColumnValue {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        Some(match key.as_str()? {
            "name" | "column" => Value::from(self.name.clone()),
            "data_type" | "dtype" => Value::from(self.data_type.clone()),
            "quoted" => Value::from(super::double_quoted(&self.name)),
            _ => return None,
        })
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        _args: &[Value],
    ) -> Result<Value, Error> {
        let data_type = self.data_type.to_ascii_lowercase();
        let is = |prefixes: &[&str]| prefixes.iter().any(|p| data_type.starts_with(p));
        let integer = is(&["int", "bigint", "smallint", "tinyint"]);
        let float = is(&["double", "float", "real"]);
        let numeric = is(&["decimal", "numeric"]);
        Ok(Value::from(match method {
            "is_string" => is(&["varchar", "string", "text", "char"]),
            "is_integer" => integer,
            "is_float" => float,
            "is_numeric" => numeric,
            "is_number" => integer || float || numeric,
            other => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("column.{other}() is not supported"),
                ));
            }
        }))
    }

    fn render(self: &Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<Column {} ({})>", self.name, self.data_type)
    }
}

impl Object for Adapter {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn call_method(
        self: &Arc<Self>,
        state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        match method {
            "dispatch" => dispatch(state, &self.catalog, args),
            "quote" => {
                let (identifier,): (String,) = from_args(args)?;
                Ok(Value::from(super::double_quoted(&identifier)))
            }
            "type" => Ok(Value::from("strata")),
            "get_columns_in_relation" => self.get_columns_in_relation(state, args),
            "get_relation" => self.get_relation(args),
            other => Err(Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "adapter.{other}() is not supported by Strata at compile time; see docs/dbt-compatibility.md"
                ),
            )),
        }
    }
}

/// The `api` global: `api.Relation.create(database=…, schema=…, identifier=…)`.
#[derive(Debug)]
pub struct Api;

impl Object for Api {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        (key.as_str()? == "Relation").then(|| Value::from_object(RelationFactory))
    }
}

/// `api.Relation`: makes relations as `ref()` renders them (the database is ignored: a
/// warehouse has one).
#[derive(Debug)]
struct RelationFactory;

impl Object for RelationFactory {
    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        if method != "create" {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "api.Relation.{method}() is not supported; use api.Relation.create(schema=…, identifier=…)"
                ),
            ));
        }
        let (kwargs,): (minijinja::value::Kwargs,) = from_args(args)?;
        let text = |key: &str| -> Result<String, Error> {
            Ok(kwargs.get::<Option<String>>(key)?.unwrap_or_default())
        };
        let (schema, identifier) = (text("schema")?, text("identifier")?);
        let _ = kwargs.get::<Option<Value>>("database")?;
        let _ = kwargs.get::<Option<Value>>("type")?;
        kwargs.assert_all_used()?;
        Ok(Value::from_object(super::Relation::new(schema, identifier)))
    }
}
