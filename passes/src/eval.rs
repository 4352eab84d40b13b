//! Evaluation of template expressions to values, with scoped variables and diagnostics that
//! point at the expression.

use spacetune_ir::{BinaryOp, Diagnostic, Expr, Handle, Module, Span, UnaryOp, Value};

/// Whether a name is a primitive op (usable as a value, e.g. `act=hswish`).
pub fn is_primitive(name: &str) -> bool {
    crate::prims::signature(name).is_some()
}

/// Variables in scope, innermost last.
#[derive(Clone, Debug, Default)]
pub struct Env {
    vars: Vec<(String, Value)>,
}

impl Env {
    pub fn new() -> Self {
        Env::default()
    }
    pub fn with(mut self, name: &str, value: Value) -> Self {
        self.vars.push((name.to_string(), value));
        self
    }
    pub fn push(&mut self, name: &str, value: Value) {
        self.vars.push((name.to_string(), value));
    }
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.vars.iter().map(|(n, _)| n.as_str())
    }
}

/// Lists and loops longer than this are refused (a guard against runaway inputs).
pub const MAX_LIST: usize = 4096;

pub struct Evaluator<'m> {
    pub module: &'m Module,
}

impl<'m> Evaluator<'m> {
    pub fn new(module: &'m Module) -> Self {
        Evaluator { module }
    }

    fn span(&self, h: Handle<Expr>) -> Span {
        self.module.exprs.span(h)
    }

    fn err(&self, h: Handle<Expr>, message: String, label: &str) -> Diagnostic {
        Diagnostic::error(message).with_label(self.span(h), label)
    }

    pub fn eval(&self, h: Handle<Expr>, env: &Env) -> Result<Value, Diagnostic> {
        self.eval_depth(h, env, 0)
    }

    fn eval_depth(&self, h: Handle<Expr>, env: &Env, depth: usize) -> Result<Value, Diagnostic> {
        if depth > 200 {
            return Err(self.err(h, "expression nests too deeply".into(), "here"));
        }
        let m = self.module;
        let ev = |x| self.eval_depth(x, env, depth + 1);
        Ok(match &m.exprs[h] {
            Expr::Int(i) => Value::Int(*i),
            Expr::Float(x, _) => Value::Float(*x),
            Expr::Name(name) => return self.lookup(h, name, env, depth),
            Expr::List(items) => {
                if items.len() > MAX_LIST {
                    return Err(self.err(
                        h,
                        format!("list has more than {MAX_LIST} elements"),
                        "too long",
                    ));
                }
                Value::List(items.iter().map(|&i| ev(i)).collect::<Result<_, _>>()?)
            }
            Expr::Unary(UnaryOp::Neg, x) => match ev(*x)? {
                Value::Int(i) => Value::Int(
                    i.checked_neg()
                        .ok_or_else(|| self.err(h, "integer overflow".into(), "here"))?,
                ),
                Value::Float(f) => Value::Float(-f),
                other => {
                    return Err(self.err(
                        *x,
                        format!("cannot negate {}", other.type_name()),
                        "not a number",
                    ))
                }
            },
            Expr::Unary(UnaryOp::Not, x) => Value::Bool(!self.truth(*x, ev(*x)?)?),
            Expr::Binary(BinaryOp::And, a, b) => {
                Value::Bool(self.truth(*a, ev(*a)?)? && self.truth(*b, ev(*b)?)?)
            }
            Expr::Binary(BinaryOp::Or, a, b) => {
                Value::Bool(self.truth(*a, ev(*a)?)? || self.truth(*b, ev(*b)?)?)
            }
            Expr::Binary(op, a, b) => self.binary(h, *op, ev(*a)?, ev(*b)?)?,
            Expr::Cond {
                then,
                cond,
                otherwise,
            } => {
                if self.truth(*cond, ev(*cond)?)? {
                    ev(*then)?
                } else {
                    ev(*otherwise)?
                }
            }
            Expr::Call(name, args) => {
                let vals: Vec<Value> = args.iter().map(|&a| ev(a)).collect::<Result<_, _>>()?;
                self.builtin(h, name, vals)?
            }
        })
    }

    fn lookup(
        &self,
        h: Handle<Expr>,
        name: &str,
        env: &Env,
        depth: usize,
    ) -> Result<Value, Diagnostic> {
        if let Some(v) = env.get(name) {
            return Ok(v.clone());
        }
        let m = self.module;
        if let Some((_, l)) = m.lets.iter().find(|(_, l)| l.name == name) {
            // A `let` may refer only to lets declared before it; this also stops cycles.
            let own = m.lets.iter().position(|(_, x)| x.name == name).unwrap_or(0);
            let mut scope = Env::new();
            for (_, earlier) in m.lets.iter().take(own) {
                let v = self.eval_depth(earlier.value, &scope, depth + 1)?;
                scope.push(&earlier.name, v);
            }
            return self.eval_depth(l.value, &scope, depth + 1);
        }
        if name == "true" || name == "false" {
            return Ok(Value::Bool(name == "true"));
        }
        if is_primitive(name) || m.block(name).is_some() {
            return Ok(Value::Sym(name.to_string()));
        }
        let mut known: Vec<&str> = env.names().collect();
        known.extend(m.lets.iter().map(|(_, l)| l.name.as_str()));
        let mut d = self.err(h, format!("unknown name `{name}`"), "not defined here");
        if let Some(s) = crate::suggest(name, known.iter().copied()) {
            d = d.with_help(format!("did you mean `{s}`?"));
        }
        Err(d)
    }

    /// Guards and conditions take booleans, or integers (non-zero is true).
    pub fn truth(&self, h: Handle<Expr>, v: Value) -> Result<bool, Diagnostic> {
        match v {
            Value::Bool(b) => Ok(b),
            Value::Int(i) => Ok(i != 0),
            other => Err(self.err(
                h,
                format!("expected a condition, found {}", other.type_name()),
                "not a condition",
            )),
        }
    }

    fn binary(
        &self,
        h: Handle<Expr>,
        op: BinaryOp,
        a: Value,
        b: Value,
    ) -> Result<Value, Diagnostic> {
        use BinaryOp::*;
        let overflow = || self.err(h, "integer overflow".into(), "here");
        if matches!(op, Eq | Ne) {
            let equal = match (&a, &b) {
                (Value::Int(x), Value::Float(y)) | (Value::Float(y), Value::Int(x)) => {
                    (*x as f64) == *y
                }
                _ => a == b,
            };
            return Ok(Value::Bool(if op == Eq { equal } else { !equal }));
        }
        match (a, b) {
            (Value::Int(x), Value::Int(y)) => Ok(match op {
                Add => Value::Int(x.checked_add(y).ok_or_else(overflow)?),
                Sub => Value::Int(x.checked_sub(y).ok_or_else(overflow)?),
                Mul => Value::Int(x.checked_mul(y).ok_or_else(overflow)?),
                Div | Rem if y == 0 => {
                    return Err(self.err(h, "division by zero".into(), "divisor is 0"))
                }
                // Exact integer division stays an integer; otherwise the result is a number
                // (channel counts are rounded where they are used).
                // (`i64::MIN / -1` has no remainder either: it overflows.)
                Div => match x.checked_rem(y) {
                    Some(0) => Value::Int(x.checked_div(y).ok_or_else(overflow)?),
                    Some(_) => Value::Float(x as f64 / y as f64),
                    None => return Err(overflow()),
                },
                Rem => Value::Int(x.checked_rem(y).ok_or_else(overflow)?),
                Lt => Value::Bool(x < y),
                Le => Value::Bool(x <= y),
                Gt => Value::Bool(x > y),
                Ge => Value::Bool(x >= y),
                Eq | Ne | And | Or => unreachable!("handled above"),
            }),
            (a @ (Value::Int(_) | Value::Float(_)), b @ (Value::Int(_) | Value::Float(_))) => {
                let (x, y) = (num(&a), num(&b));
                Ok(match op {
                    Add => Value::Float(x + y),
                    Sub => Value::Float(x - y),
                    Mul => Value::Float(x * y),
                    Div | Rem if y == 0.0 => {
                        return Err(self.err(h, "division by zero".into(), "divisor is 0"))
                    }
                    Div => Value::Float(x / y),
                    Rem => Value::Float(x % y),
                    Lt => Value::Bool(x < y),
                    Le => Value::Bool(x <= y),
                    Gt => Value::Bool(x > y),
                    Ge => Value::Bool(x >= y),
                    Eq | Ne | And | Or => unreachable!("handled above"),
                })
            }
            (a, b) => Err(self.err(
                h,
                format!(
                    "cannot apply `{}` to {} and {}",
                    op.symbol(),
                    a.type_name(),
                    b.type_name()
                ),
                "type mismatch",
            )),
        }
    }

    fn builtin(&self, h: Handle<Expr>, name: &str, args: Vec<Value>) -> Result<Value, Diagnostic> {
        let numbers = || -> Result<Vec<f64>, Diagnostic> {
            args.iter()
                .map(|v| match v {
                    Value::Int(_) | Value::Float(_) => Ok(num(v)),
                    other => Err(self.err(
                        h,
                        format!("`{name}` takes numbers, found {}", other.type_name()),
                        "here",
                    )),
                })
                .collect()
        };
        let all_int = args.iter().all(|v| matches!(v, Value::Int(_)));
        match (name, args.len()) {
            ("min" | "max", n) if n >= 1 => {
                let xs = numbers()?;
                let pick = if name == "min" {
                    xs.iter().cloned().fold(f64::INFINITY, f64::min)
                } else {
                    xs.iter().cloned().fold(f64::NEG_INFINITY, f64::max)
                };
                Ok(if all_int {
                    Value::Int(pick as i64)
                } else {
                    Value::Float(pick)
                })
            }
            ("round", 1) => {
                let x = numbers()?[0];
                if !x.is_finite() || x.abs() > 1e15 {
                    return Err(self.err(h, "cannot round a number this large".into(), "here"));
                }
                Ok(Value::Int(x.round() as i64))
            }
            ("len", 1) => match &args[0] {
                Value::List(items) => Ok(Value::Int(items.len() as i64)),
                other => Err(self.err(
                    h,
                    format!("`len` takes a list, found {}", other.type_name()),
                    "here",
                )),
            },
            ("min" | "max" | "round" | "len", n) => {
                Err(self.err(h, format!("`{name}` does not take {n} arguments"), "here"))
            }
            _ => Err(self
                .err(h, format!("unknown function `{name}`"), "not a function")
                .with_help("the functions are `min`, `max`, `round` and `len`")),
        }
    }
}

fn num(v: &Value) -> f64 {
    match v {
        Value::Int(i) => *i as f64,
        Value::Float(f) => *f,
        _ => f64::NAN,
    }
}

/// A number as a user would write it: whole numbers without a fractional part.
pub fn number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        Value::Float(x).to_string()
    }
}
