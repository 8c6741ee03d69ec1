//! Lists and dicts that templates can change in place, as dbt's Jinja (Python) allows:
//! `{% do columns.append(c) %}`, `{% do mapping.update({…}) %}`. Every list and dict literal of
//! a template becomes one of these (see [`super::literals`]).

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use minijinja::value::{Enumerator, Object, ObjectRepr, Value, from_args};
use minijinja::{Error, ErrorKind, State};

/// `__strata_list(items)`: a list that `append`, `extend`, `insert`, `pop` and `remove` change.
pub fn new_list(items: Value) -> Result<Value, Error> {
    let items = items.try_iter()?.collect();
    Ok(Value::from_object(MutableList(Mutex::new(items))))
}

/// `__strata_dict(entries)`: a dict that `update`, `pop` and `setdefault` change.
pub fn new_dict(entries: Value) -> Result<Value, Error> {
    let mut map = Entries::default();
    for key in entries.try_iter()? {
        let value = entries.get_item(&key)?;
        map.insert(key, value);
    }
    Ok(Value::from_object(MutableDict(Mutex::new(map))))
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

fn no_method(kind: &str, method: &str) -> Error {
    Error::new(
        ErrorKind::UnknownMethod,
        format!("{kind} has no method named {method}"),
    )
}

/// A list changed in place.
#[derive(Debug)]
pub struct MutableList(Mutex<Vec<Value>>);

impl Object for MutableList {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let items = locked(&self.0);
        let index = i64::try_from(key.clone()).ok()?;
        let index = if index < 0 {
            items.len().checked_sub(index.unsigned_abs() as usize)?
        } else {
            index as usize
        };
        items.get(index).cloned()
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(locked(&self.0).clone())
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        let mut items = locked(&self.0);
        match method {
            "append" => {
                let (item,): (Value,) = from_args(args)?;
                items.push(item);
            }
            "extend" => {
                let (more,): (Value,) = from_args(args)?;
                items.extend(more.try_iter()?);
            }
            "insert" => {
                let (index, item): (usize, Value) = from_args(args)?;
                let index = index.min(items.len());
                items.insert(index, item);
            }
            "pop" => {
                let (index,): (Option<i64>,) = from_args(args)?;
                let len = items.len() as i64;
                let index = index.map_or(len - 1, |i| if i < 0 { len + i } else { i });
                if index < 0 || index >= len {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        "pop index out of range",
                    ));
                }
                return Ok(items.remove(index as usize));
            }
            "remove" => {
                let (item,): (Value,) = from_args(args)?;
                match items.iter().position(|x| *x == item) {
                    Some(found) => {
                        items.remove(found);
                    }
                    None => {
                        return Err(Error::new(
                            ErrorKind::InvalidOperation,
                            format!("list.remove({item}): not in list"),
                        ));
                    }
                }
            }
            "index" => {
                let (item,): (Value,) = from_args(args)?;
                return items
                    .iter()
                    .position(|x| *x == item)
                    .map(Value::from)
                    .ok_or_else(|| {
                        Error::new(
                            ErrorKind::InvalidOperation,
                            format!("{item} is not in list"),
                        )
                    });
            }
            "count" => {
                let (item,): (Value,) = from_args(args)?;
                return Ok(Value::from(items.iter().filter(|x| **x == item).count()));
            }
            other => return Err(no_method("list", other)),
        }
        Ok(Value::from(()))
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&Value::from(locked(&self.0).clone()), f)
    }
}

/// A dict's entries in insertion order (template dicts are small).
#[derive(Debug, Default, Clone)]
struct Entries(Vec<(Value, Value)>);

impl Entries {
    fn get(&self, key: &Value) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn insert(&mut self, key: Value, value: Value) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.0.push((key, value)),
        }
    }

    fn remove(&mut self, key: &Value) -> Option<Value> {
        let found = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.remove(found).1)
    }

    fn keys(&self) -> impl Iterator<Item = &Value> {
        self.0.iter().map(|(k, _)| k)
    }

    fn values(&self) -> impl Iterator<Item = &Value> {
        self.0.iter().map(|(_, v)| v)
    }
}

/// A dict changed in place.
#[derive(Debug)]
pub struct MutableDict(Mutex<Entries>);

impl Object for MutableDict {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        locked(&self.0).get(key).cloned()
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(locked(&self.0).keys().cloned().collect())
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        let mut map = locked(&self.0);
        match method {
            "update" => {
                let (other,): (Value,) = from_args(args)?;
                for key in other.try_iter()? {
                    let value = other.get_item(&key)?;
                    map.insert(key, value);
                }
                Ok(Value::from(()))
            }
            "pop" => {
                let (key, default): (Value, Option<Value>) = from_args(args)?;
                match (map.remove(&key), default) {
                    (Some(value), _) => Ok(value),
                    (None, Some(default)) => Ok(default),
                    (None, None) => Err(Error::new(
                        ErrorKind::InvalidOperation,
                        format!("dict.pop({key}): no such key"),
                    )),
                }
            }
            "setdefault" => {
                let (key, default): (Value, Option<Value>) = from_args(args)?;
                if let Some(value) = map.get(&key) {
                    return Ok(value.clone());
                }
                let value = default.unwrap_or(Value::from(()));
                map.insert(key, value.clone());
                Ok(value)
            }
            "get" => {
                let (key, default): (Value, Option<Value>) = from_args(args)?;
                Ok(map
                    .get(&key)
                    .cloned()
                    .or(default)
                    .unwrap_or(Value::from(())))
            }
            "items" => Ok(Value::from(
                map.0
                    .iter()
                    .map(|(k, v)| Value::from(vec![k.clone(), v.clone()]))
                    .collect::<Vec<_>>(),
            )),
            "keys" => Ok(Value::from(map.keys().cloned().collect::<Vec<_>>())),
            "values" => Ok(Value::from(map.values().cloned().collect::<Vec<_>>())),
            other => Err(no_method("dict", other)),
        }
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entries = locked(&self.0).0.clone();
        let map: Value = entries
            .into_iter()
            .collect::<Vec<_>>()
            .into_iter()
            .collect();
        fmt::Debug::fmt(&map, f)
    }
}
