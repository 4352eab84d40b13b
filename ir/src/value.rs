//! Values that expressions evaluate to.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Value {
    Int(i64),
    Float(f64),
    Bool(bool),
    /// The name of an op or block used as a value (`act=hswish`).
    Sym(String),
    List(Vec<Value>),
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Bool(_) => "a boolean",
            Value::Sym(_) => "a name",
            Value::List(_) => "a list",
        }
    }

    /// The value as it appears in an architecture-key token: `3`, `0.5`, `relu6`, `1-3-3`.
    pub fn token(&self) -> String {
        match self {
            Value::List(items) => items.iter().map(Value::token).collect::<Vec<_>>().join("-"),
            other => other.to_string(),
        }
    }
}

/// Floats print in their shortest round-tripping form, always with a `.` so they read back
/// as floats.
pub fn format_float(x: f64) -> String {
    let s = format!("{x:?}");
    if s.contains('.') || s.contains('e') || s.contains("inf") || s.contains("NaN") {
        s
    } else {
        format!("{s}.0")
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{}", format_float(*x)),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Sym(s) => write!(f, "{s}"),
            Value::List(items) => {
                write!(f, "[")?;
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{v}")?;
                }
                write!(f, "]")
            }
        }
    }
}
