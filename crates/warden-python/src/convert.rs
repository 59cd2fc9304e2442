//! Python values to JSON values and back.
//!
//! Written here rather than through `pythonize` for two reasons: a hostile, deeply nested
//! Python value must fail with an error, not overflow the stack (the conversion stops at the
//! request depth limit), and a value that is not JSON must name where it is (`args.to[1]`) and
//! what type it has, never what it holds.

use pyo3::exceptions::PyOverflowError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde_json::{Map, Number, Value};

/// The core's request nesting limit (`warden_core::request::MAX_REQUEST_DEPTH`): deeper values
/// are refused with the core's own message.
pub(crate) const MAX_DEPTH: usize = 64;

/// Why a Python value is not a JSON value: where (a dotted path, `None` at the top) and what.
pub(crate) struct NotJson {
    pub field: Option<String>,
    pub message: String,
}

/// Converts a Python value (dict, list, tuple, str, int, float, bool, None) to JSON; `path` is
/// the field the value sits at (for errors).
pub(crate) fn to_json(value: &Bound<'_, PyAny>, path: &mut String) -> Result<Value, NotJson> {
    convert(value, path, 0)
}

fn fail(path: &str, message: String) -> NotJson {
    NotJson {
        field: (!path.is_empty()).then(|| path.to_owned()),
        message,
    }
}

fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "object".to_owned())
}

fn convert(value: &Bound<'_, PyAny>, path: &mut String, depth: usize) -> Result<Value, NotJson> {
    if value.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(s) = value.cast::<PyString>() {
        return s
            .to_cow()
            .map(|s| Value::String(s.into_owned()))
            .map_err(|_| fail(path, "a string that is not valid Unicode".to_owned()));
    }
    // `bool` is a subclass of `int`: test it first.
    if let Ok(b) = value.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if value.is_instance_of::<PyInt>() {
        if let Ok(i) = value.extract::<i64>() {
            return Ok(Value::from(i));
        }
        if let Ok(u) = value.extract::<u64>() {
            return Ok(Value::from(u));
        }
        return Err(fail(
            path,
            "an integer outside the 64-bit range JSON numbers are read with".to_owned(),
        ));
    }
    if let Ok(f) = value.cast::<PyFloat>() {
        return Number::from_f64(f.value())
            .map(Value::Number)
            .ok_or_else(|| fail(path, "NaN and infinity are not JSON numbers".to_owned()));
    }
    let depth = depth + 1;
    if depth > MAX_DEPTH {
        return Err(fail(
            path,
            format!("nesting deeper than {MAX_DEPTH} levels"),
        ));
    }
    if let Ok(dict) = value.cast::<PyDict>() {
        let mut map = Map::with_capacity(dict.len());
        for (k, v) in dict.iter() {
            let Ok(key) = k.cast::<PyString>() else {
                return Err(fail(
                    path,
                    format!(
                        "a key of type `{}`: JSON object keys are strings",
                        type_name(&k)
                    ),
                ));
            };
            let key = key
                .to_cow()
                .map_err(|_| fail(path, "a key that is not valid Unicode".to_owned()))?;
            let mark = path.len();
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(&key);
            let item = convert(&v, path, depth)?;
            path.truncate(mark);
            map.insert(key.into_owned(), item);
        }
        return Ok(Value::Object(map));
    }
    let items = if let Ok(list) = value.cast::<PyList>() {
        list.iter().collect::<Vec<_>>()
    } else if let Ok(tuple) = value.cast::<PyTuple>() {
        tuple.iter().collect::<Vec<_>>()
    } else {
        return Err(fail(
            path,
            format!("a value of type `{}` is not JSON", type_name(value)),
        ));
    };
    let mut array = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let mark = path.len();
        path.push('[');
        path.push_str(&i.to_string());
        path.push(']');
        array.push(convert(item, path, depth)?);
        path.truncate(mark);
    }
    Ok(Value::Array(array))
}

/// Converts a JSON value to Python (dict, list, str, int, float, bool, None). Values come from
/// the engine, which bounds their depth.
pub(crate) fn to_python<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else if let Some(f) = n.as_f64() {
                PyFloat::new(py, f).into_any()
            } else {
                return Err(PyOverflowError::new_err("a number outside the f64 range"));
            }
        }
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(to_python(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (k, v) in map {
                dict.set_item(k, to_python(py, v)?)?;
            }
            dict.into_any()
        }
    })
}
