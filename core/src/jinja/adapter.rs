//! `adapter`: what dbt's adapter object answers at compile time.

use std::sync::Arc;

use minijinja::value::{Object, ObjectRepr, from_args};
use minijinja::{Error, ErrorKind, State, Value};

use super::namespaces::{MacroCatalog, dispatch};

/// The `adapter` global.
#[derive(Debug)]
pub struct Adapter {
    catalog: Arc<MacroCatalog>,
}

impl Adapter {
    /// The adapter of a project whose macros `catalog` describes.
    pub fn new(catalog: &Arc<MacroCatalog>) -> Adapter {
        Adapter {
            catalog: catalog.clone(),
        }
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
                Ok(Value::from(format!(
                    "\"{}\"",
                    identifier.replace('"', "\"\"")
                )))
            }
            "type" => Ok(Value::from("strata")),
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
