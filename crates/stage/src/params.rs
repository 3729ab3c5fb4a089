//! Typed stage params: declared by a stage kind, checked and completed by the engine.
//!
//! Values are JSON values (YAML is converted on load) so that resolved params have one
//! canonical encoding to hash, whatever the pipeline file's spelling (`4`, `4.0`, `"4"`).

use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

/// The type of a param. Numbers are coerced to the declared type (an `Int` param rejects
/// `2.5`; a `Float` param accepts `3` and stores `3.0`) so equal settings hash equally.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamType {
    /// `true` or `false`.
    Bool,
    /// A whole number, optionally bounded (inclusive).
    Int {
        /// Smallest allowed value.
        min: Option<i64>,
        /// Largest allowed value.
        max: Option<i64>,
    },
    /// A number, optionally bounded (inclusive).
    Float {
        /// Smallest allowed value.
        min: Option<f64>,
        /// Largest allowed value.
        max: Option<f64>,
    },
    /// Any string.
    Str,
    /// One of a fixed set of strings.
    Choice(&'static [&'static str]),
    /// A list of values of one type.
    List(Box<ParamType>),
    /// Free-form structured value (a mapping or list); the stage checks it in `validate`.
    Any,
}

impl ParamType {
    /// An unbounded integer.
    pub const fn int() -> Self {
        ParamType::Int { min: None, max: None }
    }
    /// An integer in [min, max].
    pub const fn int_range(min: i64, max: i64) -> Self {
        ParamType::Int {
            min: Some(min),
            max: Some(max),
        }
    }
    /// An unbounded number.
    pub const fn float() -> Self {
        ParamType::Float { min: None, max: None }
    }
    /// A number in [min, max].
    pub const fn float_range(min: f64, max: f64) -> Self {
        ParamType::Float {
            min: Some(min),
            max: Some(max),
        }
    }
    /// A list of `of`.
    pub fn list(of: ParamType) -> Self {
        ParamType::List(Box::new(of))
    }

    /// Checks `v` against this type and returns its canonical form.
    pub fn coerce(&self, v: &Value) -> Result<Value, String> {
        match self {
            ParamType::Bool => v
                .as_bool()
                .map(Value::Bool)
                .ok_or_else(|| format!("expected true or false, found {}", show(v))),
            ParamType::Int { min, max } => {
                let i = match v {
                    Value::Number(n) if n.is_i64() => n.as_i64(),
                    Value::Number(n) if n.is_u64() => None,
                    Value::Number(n) => n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15).map(|f| f as i64),
                    _ => None,
                }
                .ok_or_else(|| format!("expected an integer, found {}", show(v)))?;
                if let Some(lo) = min.filter(|lo| i < *lo) {
                    return Err(format!("{i} is below the minimum {lo}"));
                }
                if let Some(hi) = max.filter(|hi| i > *hi) {
                    return Err(format!("{i} is above the maximum {hi}"));
                }
                Ok(Value::from(i))
            }
            ParamType::Float { min, max } => {
                let f = v.as_f64().ok_or_else(|| format!("expected a number, found {}", show(v)))?;
                if !f.is_finite() {
                    return Err(format!("expected a finite number, found {f}"));
                }
                if let Some(lo) = min.filter(|lo| f < *lo) {
                    return Err(format!("{f} is below the minimum {lo}"));
                }
                if let Some(hi) = max.filter(|hi| f > *hi) {
                    return Err(format!("{f} is above the maximum {hi}"));
                }
                serde_json::Number::from_f64(f)
                    .map(Value::Number)
                    .ok_or_else(|| format!("{f} is not representable"))
            }
            ParamType::Str => v
                .as_str()
                .map(|s| Value::String(s.to_owned()))
                .ok_or_else(|| format!("expected a string, found {}", show(v))),
            ParamType::Choice(options) => {
                let s = v
                    .as_str()
                    .ok_or_else(|| format!("expected one of {}, found {}", options.join(", "), show(v)))?;
                if options.contains(&s) {
                    Ok(Value::String(s.to_owned()))
                } else {
                    let hint = nearest(s, options.iter().copied())
                        .map(|n| format!(" (did you mean `{n}`?)"))
                        .unwrap_or_default();
                    Err(format!("`{s}` is not one of {}{hint}", options.join(", ")))
                }
            }
            ParamType::List(of) => {
                let items = v.as_array().ok_or_else(|| format!("expected a list, found {}", show(v)))?;
                items
                    .iter()
                    .enumerate()
                    .map(|(i, x)| of.coerce(x).map_err(|e| format!("item {i}: {e}")))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Value::Array)
            }
            ParamType::Any => Ok(v.clone()),
        }
    }
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamType::Bool => write!(f, "bool"),
            ParamType::Int { min, max } => match (min, max) {
                (Some(a), Some(b)) => write!(f, "integer in {a}..={b}"),
                (Some(a), None) => write!(f, "integer >= {a}"),
                (None, Some(b)) => write!(f, "integer <= {b}"),
                (None, None) => write!(f, "integer"),
            },
            ParamType::Float { min, max } => match (min, max) {
                (Some(a), Some(b)) => write!(f, "number in [{a}, {b}]"),
                (Some(a), None) => write!(f, "number >= {a}"),
                (None, Some(b)) => write!(f, "number <= {b}"),
                (None, None) => write!(f, "number"),
            },
            ParamType::Str => write!(f, "string"),
            ParamType::Choice(o) => write!(f, "one of {}", o.join(" | ")),
            ParamType::List(of) => write!(f, "list of {of}"),
            ParamType::Any => write!(f, "any"),
        }
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::Null => "nothing (null)".into(),
        Value::String(s) => format!("the string \"{s}\""),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
        other => other.to_string(),
    }
}

/// The closest candidate by edit distance, if close enough to be a plausible typo.
/// "did you mean `x`? " when a candidate is close to `name`, else nothing: the start of a fix.
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    nearest(name, candidates)
        .map(|n| format!("did you mean `{n}`? "))
        .unwrap_or_default()
}

/// The candidate closest to `word` by edit distance, if it is close enough to be a likely typo.
pub fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(&word.to_lowercase(), &c.to_lowercase()), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance over chars.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// A declared param.
#[derive(Debug, Clone)]
pub struct ParamSpec {
    /// The param's name in `params:`.
    pub name: &'static str,
    /// Its type (values are coerced to it).
    pub ty: ParamType,
    /// `None` makes the param required.
    pub default: Option<Value>,
    /// What it does, for `spherepipe kinds` and error messages.
    pub doc: &'static str,
    /// An execution setting: it says where or how fast the stage runs, never what it
    /// produces, so (like `resources:`) it stays out of the fingerprint and changing it
    /// reuses the cache and the checkpoints. See [`ParamSpec::execution_setting`].
    pub execution: bool,
}

impl ParamSpec {
    /// A param with a default.
    pub fn new(name: &'static str, ty: ParamType, default: impl Into<Value>, doc: &'static str) -> Self {
        ParamSpec {
            name,
            ty,
            default: Some(default.into()),
            doc,
            execution: false,
        }
    }
    /// A param the pipeline file must set.
    pub fn required(name: &'static str, ty: ParamType, doc: &'static str) -> Self {
        ParamSpec {
            name,
            ty,
            default: None,
            doc,
            execution: false,
        }
    }
    /// Marks the param as an execution setting. Only for a param that cannot change a single
    /// byte of the artifact: the stage must produce the same bytes whatever its value (and a
    /// test should say so), since the cache will hand out one value's result for another's.
    pub fn execution_setting(mut self) -> Self {
        self.execution = true;
        self
    }
}

/// A param lookup that failed: only reachable when a stage asks for a param it did not
/// declare, or with another type than declared — a bug in the stage, reported as an error.
#[derive(Debug, thiserror::Error)]
#[error("param `{name}`: {problem}")]
pub struct ParamError {
    /// The param.
    pub name: String,
    /// What went wrong.
    pub problem: String,
}

/// Resolved params: every declared param present, in canonical form, sorted by name.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Params(pub BTreeMap<String, Value>);

impl Params {
    /// The params that decide what the stage produces: all but `specs`' execution settings.
    /// What the fingerprint covers, and what a stage may record in its artifact.
    pub fn outcome(&self, specs: &[ParamSpec]) -> BTreeMap<String, Value> {
        let mut params = self.0.clone();
        params.retain(|name, _| !specs.iter().any(|s| s.execution && s.name == name));
        params
    }

    /// The param's JSON value.
    pub fn raw(&self, name: &str) -> Result<&Value, ParamError> {
        self.0.get(name).ok_or_else(|| ParamError {
            name: name.into(),
            problem: "not declared by this stage kind".into(),
        })
    }
    /// Deserialises a param into any serde type.
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<T, ParamError> {
        serde_json::from_value(self.raw(name)?.clone()).map_err(|e| ParamError {
            name: name.into(),
            problem: e.to_string(),
        })
    }
    /// An integer param.
    pub fn i64(&self, name: &str) -> Result<i64, ParamError> {
        self.get(name)
    }
    /// A number param.
    pub fn f64(&self, name: &str) -> Result<f64, ParamError> {
        self.get(name)
    }
    /// A boolean param.
    pub fn bool(&self, name: &str) -> Result<bool, ParamError> {
        self.get(name)
    }
    /// A string param.
    pub fn str(&self, name: &str) -> Result<&str, ParamError> {
        self.raw(name)?.as_str().ok_or_else(|| ParamError {
            name: name.into(),
            problem: "is not a string".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_are_coerced_to_the_declared_type() {
        assert_eq!(ParamType::float().coerce(&json!(3)).unwrap(), json!(3.0));
        assert_eq!(ParamType::int().coerce(&json!(4.0)).unwrap(), json!(4));
        assert!(ParamType::int().coerce(&json!(2.5)).unwrap_err().contains("integer"));
        assert!(ParamType::int().coerce(&json!("4")).unwrap_err().contains("string"));
        assert!(ParamType::int_range(1, 4).coerce(&json!(5)).unwrap_err().contains("maximum 4"));
    }

    #[test]
    fn choices_suggest_the_nearest() {
        let t = ParamType::Choice(&["softmax", "a-softmax", "cosface"]);
        let e = t.coerce(&json!("a-sofmax")).unwrap_err();
        assert!(e.contains("did you mean `a-softmax`"), "{e}");
    }

    #[test]
    fn lists_check_each_item() {
        let t = ParamType::list(ParamType::int());
        assert_eq!(t.coerce(&json!([112, 96])).unwrap(), json!([112, 96]));
        assert!(t.coerce(&json!([112, "x"])).unwrap_err().starts_with("item 1"));
    }

    #[test]
    fn edit_distance_matches_hand_counts() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("align", "align"), 0);
        assert_eq!(nearest("algin", ["align", "train", "flip"]), Some("align"));
        assert_eq!(nearest("zzzzzz", ["align", "train"]), None);
    }
}
