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
