//! dbt's macro namespaces within one render: `package.macro(…)`, unqualified calls of the
//! project's and dbt's own macros from anywhere, `adapter.dispatch(…)` and `return(…)`.
//!
//! Each package's macros (the project's own, each installed package's, and Strata's
//! implementation of dbt's) form one template, imported by every node's prelude and handed to
//! the render's [`Modules`]. Macros are values bound to the render state, so namespaces are
//! resolved at call time through that state: a [`Namespace`] object answers `dbt_utils.star(…)`,
//! a [`Forward`] global answers an unqualified `my_macro(…)`, and [`dispatch`] searches the
//! packages in dbt's order. Every macro is wrapped ([`Wrapped`]) so that `return(value)` ends
//! the macro with `value` as its result, as in dbt.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use minijinja::value::{Enumerator, Kwargs, Object, ObjectRepr, from_args};
use minijinja::{Error, ErrorKind, State, Value};

use crate::config::did_you_mean;

/// The namespace of Strata's implementation of dbt's own macros (`dbt.date_trunc`, …).
pub const DBT_NAMESPACE: &str = "dbt";

/// Adapter prefixes tried by `adapter.dispatch`, most specific first.
const DISPATCH_PREFIXES: [&str; 2] = ["strata", "default"];

/// What every render of one project knows about its macros: which namespace defines which
/// names, and the dispatch search order configured in the project file.
#[derive(Debug, Default)]
pub struct MacroCatalog {
    /// The root project's name; its macros win over dbt's and are callable unqualified.
    pub root: String,
    /// Macro names of each namespace (the root project, packages, [`DBT_NAMESPACE`]).
    pub names: BTreeMap<String, BTreeSet<String>>,
    /// `dispatch:` of the project file: the search order of each macro namespace.
    pub search_orders: BTreeMap<String, Vec<String>>,
}

impl MacroCatalog {
    /// Whether namespace `namespace` defines macro `name`.
    pub fn defines(&self, namespace: &str, name: &str) -> bool {
        self.names
            .get(namespace)
            .is_some_and(|names| names.contains(name))
    }

    /// The namespace an unqualified call of `name` reaches from a node of `package`: the
    /// package itself, then the root project, then dbt's, as in dbt.
    pub fn unqualified<'n>(&'n self, package: &'n str, name: &str) -> Option<&'n str> {
        [package, self.root.as_str(), DBT_NAMESPACE]
            .into_iter()
            .find(|namespace| self.defines(namespace, name))
    }

    /// The packages that define macro `name`, for a hint.
    fn packages_defining(&self, name: &str) -> Vec<&str> {
        self.names
            .iter()
            .filter(|(_, names)| names.contains(name))
            .map(|(package, _)| package.as_str())
            .collect()
    }

    /// The packages `adapter.dispatch(name, namespace)` searches, in order: the project's
    /// `dispatch:` setting for the namespace, else the root project and then the namespace
    /// itself (dbt's own macros when none is given).
    fn search_order(&self, namespace: Option<&str>) -> Vec<String> {
        let namespace = namespace.unwrap_or(DBT_NAMESPACE);
        if let Some(order) = self.search_orders.get(namespace) {
            return order.clone();
        }
        let mut order = vec![self.root.clone()];
        if namespace != self.root {
            order.push(namespace.to_string());
        }
        if namespace != DBT_NAMESPACE {
            // Packages may dispatch to dbt's cross-database macros under their own namespace.
            order.push(DBT_NAMESPACE.to_string());
        }
        order
    }
}

/// The imported macro templates of one render, by namespace (a render-state extension).
#[derive(Default)]
struct Modules(BTreeMap<String, Value>);

/// The values of the `return()` calls of the macros running in one render, innermost last.
#[derive(Default)]
struct ReturnSlots(Vec<Option<Value>>);

/// `__strata_module(namespace, module)`: registers an imported macro template for the render.
pub fn register_module(state: &mut State, namespace: String, module: Value) -> String {
    state
        .get_or_insert_extension(Modules::default())
        .0
        .insert(namespace, module);
    String::new()
}

/// The name macro `name` is exported under from its package's template: its own, but for
/// names starting with `_`, which Jinja keeps private to a template while dbt lets
/// `package._macro(…)` reach them (dbt_utils' `_is_relation`).
pub(crate) fn exported_name(name: &str) -> std::borrow::Cow<'_, str> {
    if name.starts_with('_') {
        std::borrow::Cow::Owned(format!("strata_private{name}"))
    } else {
        std::borrow::Cow::Borrowed(name)
    }
}

/// Macro `name` of `namespace` in this render, if it defines one.
fn find_macro(state: &State, namespace: &str, name: &str) -> Option<Value> {
    let module = state.get_extension::<Modules>()?.0.get(namespace)?;
    module
        .get_attr(&exported_name(name))
        .ok()
        .filter(|value| !value.is_undefined())
}

/// `__strata_wrap(macro)`: the macro, ending early with the value of a `return()` call.
pub fn wrap(value: Value) -> Value {
    if value.is_undefined() || value.as_object().is_none() {
        return value;
    }
    Value::from_object(Wrapped { inner: value })
}

/// A macro whose `return(value)` makes `value` the result of the call.
#[derive(Debug)]
struct Wrapped {
    inner: Value,
}

impl Object for Wrapped {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.inner.get_attr(key.as_str()?).ok()
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::NonEnumerable
    }

    fn call(self: &Arc<Self>, state: &mut State<'_, '_>, args: &[Value]) -> Result<Value, Error> {
        state
            .get_or_insert_extension(ReturnSlots::default())
            .0
            .push(None);
        let result = self.inner.call(state, args);
        let returned = state
            .get_extension_mut::<ReturnSlots>()
            .and_then(|slots| slots.0.pop())
            .flatten();
        match returned {
            Some(value) => Ok(value),
            None => result,
        }
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.inner)
    }
}

/// `return(value)`: ends the running macro with `value` as its result.
pub fn return_function(state: &mut State, value: Option<Value>) -> Result<Value, Error> {
    let value = value.unwrap_or(Value::from(()));
    match state
        .get_extension_mut::<ReturnSlots>()
        .and_then(|slots| slots.0.last_mut())
    {
        Some(slot) => {
            *slot = Some(value);
            // Unwinds the rest of the macro; the macro's wrapper turns this into its result.
            Err(Error::new(ErrorKind::InvalidOperation, "return()"))
        }
        None => Err(Error::new(
            ErrorKind::InvalidOperation,
            "return() is only allowed inside a macro",
        )),
    }
}

/// A package's name as a value: `package.macro(…)` calls the package's macro.
#[derive(Debug)]
pub struct Namespace {
    name: String,
    catalog: Arc<MacroCatalog>,
}

impl Namespace {
    /// The namespace `name` of `catalog`.
    pub fn new(name: &str, catalog: &Arc<MacroCatalog>) -> Namespace {
        Namespace {
            name: name.to_string(),
            catalog: catalog.clone(),
        }
    }
}

impl Object for Namespace {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn call_method(
        self: &Arc<Self>,
        state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        match find_macro(state, &self.name, method) {
            Some(found) => found.call(state, args),
            None => {
                let names = self.catalog.names.get(&self.name).into_iter().flatten();
                let hint = did_you_mean(method, names.map(String::as_str));
                // Not UnknownMethod: that would hand the call to Python's string methods.
                Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("package '{}' has no macro '{method}'{hint}", self.name),
                ))
            }
        }
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name)
    }
}

/// A global standing for a macro called without its package: the root project's, else dbt's.
#[derive(Debug)]
pub struct Forward {
    name: String,
    catalog: Arc<MacroCatalog>,
}

impl Forward {
    /// The unqualified macro `name` of `catalog`.
    pub fn new(name: &str, catalog: &Arc<MacroCatalog>) -> Forward {
        Forward {
            name: name.to_string(),
            catalog: catalog.clone(),
        }
    }
}

impl Object for Forward {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn call(self: &Arc<Self>, state: &mut State<'_, '_>, args: &[Value]) -> Result<Value, Error> {
        let package = super::scope(state).map(|scope| scope.package().to_string());
        let package = package.as_deref().unwrap_or(&self.catalog.root);
        let found = self
            .catalog
            .unqualified(package, &self.name)
            .and_then(|namespace| find_macro(state, namespace, &self.name));
        if let Some(found) = found {
            return found.call(state, args);
        }
        let owners = self.catalog.packages_defining(&self.name);
        let message = match owners.first() {
            Some(owner) => format!(
                "macro '{}' belongs to package '{owner}': call it as {owner}.{}(…)",
                self.name, self.name
            ),
            None => format!("macro '{}' is not available in this render", self.name),
        };
        Err(Error::new(ErrorKind::UnknownFunction, message))
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<macro {}>", self.name)
    }
}

/// `adapter.dispatch(macro_name, macro_namespace=None)`: the implementation of a
/// cross-database macro for Strata: `strata__name`, else `default__name`, in each package of
/// the search order.
pub fn dispatch(state: &State, catalog: &MacroCatalog, args: &[Value]) -> Result<Value, Error> {
    let (name, namespace, kwargs): (String, Option<String>, Kwargs) = from_args(args)?;
    let namespace = match namespace {
        Some(namespace) => Some(namespace),
        None => kwargs.get::<Option<String>>("macro_namespace")?,
    };
    let namespace = namespace.filter(|namespace| !namespace.is_empty());
    let order = catalog.search_order(namespace.as_deref());
    let strata_own = format!("strata__{name}");
    for (position, package) in order.iter().enumerate() {
        // Strata's own implementation of a package's macro (in the dbt namespace) comes right
        // after the project's, before the package's defaults: as an adapter's would in dbt.
        if position > 0
            && order[position - 1] == catalog.root
            && let Some(found) = find_macro(state, DBT_NAMESPACE, &strata_own)
        {
            return Ok(found);
        }
        for prefix in DISPATCH_PREFIXES {
            let candidate = format!("{prefix}__{name}");
            if let Some(found) = find_macro(state, package, &candidate) {
                return Ok(found);
            }
        }
    }
    Err(Error::new(
        ErrorKind::InvalidOperation,
        format!(
            "adapter.dispatch('{name}') found no implementation: none of {} defines strata__{name} or default__{name}",
            order.join(", ")
        ),
    ))
}

#[cfg(test)]
mod tests;
