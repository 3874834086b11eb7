//! Typed reading of a parsed form body, Stripe-strict: every parameter the handler does not
//! read is an unknown parameter (`parameter_unknown`), reported with its bracketed name.

use serde_json::{Map, Value};

use crate::error::{Result, StripeError};

pub struct Params {
    prefix: String,
    map: Map<String, Value>,
}

impl Params {
    pub fn new(map: Map<String, Value>) -> Self {
        Self {
            prefix: String::new(),
            map,
        }
    }

    fn name(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}[{key}]", self.prefix)
        }
    }

    pub fn has(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    /// Whether `key` was given as a hash (`key[a]=…`) rather than a plain value.
    pub fn is_hash(&self, key: &str) -> bool {
        self.map.get(key).is_some_and(Value::is_object)
    }

    /// Takes a raw value out (for handlers that keep whole sub-trees, e.g. `evidence`).
    pub fn take(&mut self, key: &str) -> Option<Value> {
        self.map.remove(key)
    }

    /// A string parameter. An empty string counts as given (Stripe uses it to unset).
    pub fn str(&mut self, key: &str) -> Result<Option<String>> {
        match self.map.remove(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(StripeError::invalid(format!(
                "Invalid string: {{...}}. {} must be a string.",
                self.name(key)
            ))
            .code("parameter_invalid_string")
            .param(&self.name(key))),
        }
    }

    /// A string parameter that must be present and non-empty.
    pub fn req_str(&mut self, key: &str) -> Result<String> {
        match self.str(key)? {
            Some(s) if !s.is_empty() => Ok(s),
            _ => Err(StripeError::missing_param(&self.name(key))),
        }
    }

    /// A non-empty string, or `None` when absent or empty (`""` unsets).
    pub fn opt_str(&mut self, key: &str) -> Result<Option<String>> {
        Ok(self.str(key)?.filter(|s| !s.is_empty()))
    }

    pub fn int(&mut self, key: &str) -> Result<Option<i64>> {
        match self.str(key)? {
            None => Ok(None),
            Some(s) if s.is_empty() => Ok(None),
            Some(s) => s
                .parse::<i64>()
                .map(Some)
                .map_err(|_| StripeError::invalid_integer(&self.name(key), &s)),
        }
    }

    pub fn req_int(&mut self, key: &str) -> Result<i64> {
        self.int(key)?
            .ok_or_else(|| StripeError::missing_param(&self.name(key)))
    }

    pub fn bool(&mut self, key: &str) -> Result<Option<bool>> {
        match self.str(key)?.as_deref() {
            None | Some("") => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(other) => Err(StripeError::invalid(format!("Invalid boolean: {other}"))
                .code("parameter_invalid_boolean")
                .param(&self.name(key))),
        }
    }

    /// One of `allowed`; Stripe's message for anything else.
    pub fn enum_str(&mut self, key: &str, allowed: &[&str]) -> Result<Option<String>> {
        match self.opt_str(key)? {
            None => Ok(None),
            Some(v) if allowed.contains(&v.as_str()) => Ok(Some(v)),
            Some(_) => Err(StripeError::invalid(format!(
                "Invalid {}: must be one of {}",
                self.name(key),
                allowed.join(", ")
            ))
            .code("parameter_invalid_string")
            .param(&self.name(key))),
        }
    }

    /// `metadata`: a map of string to string (≤ 50 keys, key ≤ 40 chars, value ≤ 500 chars).
    /// `metadata=` (empty string) means "unset all"; returned as an empty map with `true`.
    pub fn metadata(&mut self, key: &str) -> Result<Option<(Map<String, Value>, bool)>> {
        let name = self.name(key);
        match self.map.remove(key) {
            None => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(Some((Map::new(), true))),
            Some(Value::Object(m)) => {
                if m.len() > 50 {
                    return Err(StripeError::invalid(
                        "Invalid metadata: metadata cannot have more than 50 keys",
                    )
                    .param(&name));
                }
                for (k, v) in &m {
                    if k.chars().count() > 40 {
                        return Err(StripeError::invalid(format!(
                            "Invalid metadata: keys can be a maximum of 40 characters. `{k}` is too long."
                        ))
                        .param(&format!("{name}[{k}]")));
                    }
                    match v {
                        Value::String(s) if s.chars().count() <= 500 => {}
                        Value::String(_) => {
                            return Err(StripeError::invalid(
                                "Invalid metadata: values can be a maximum of 500 characters.",
                            )
                            .param(&format!("{name}[{k}]")));
                        }
                        _ => {
                            return Err(StripeError::invalid(
                                "Invalid value type: {...} must be a string",
                            )
                            .param(&format!("{name}[{k}]")));
                        }
                    }
                }
                Ok(Some((m, false)))
            }
            Some(_) => Err(StripeError::invalid("Invalid hash")
                .code("parameter_invalid_hash")
                .param(&name)),
        }
    }

    /// A list of strings: `a[]=x&a[]=y` or `a[0]=x&a[1]=y`.
    pub fn str_list(&mut self, key: &str) -> Result<Option<Vec<String>>> {
        let name = self.name(key);
        let bad = || {
            StripeError::invalid("Invalid array")
                .code("parameter_invalid_array")
                .param(&name)
        };
        match self.map.remove(key) {
            None => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(Some(Vec::new())),
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(bad()),
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some(Value::Object(m)) => indexed(m)
                .ok_or_else(bad)?
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(bad()),
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some(_) => Err(bad()),
        }
    }

    /// A nested hash parameter, read with the same strictness.
    pub fn sub(&mut self, key: &str) -> Result<Option<Params>> {
        let name = self.name(key);
        match self.map.remove(key) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(Params { prefix: name, map })),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(_) => Err(StripeError::invalid("Invalid hash")
                .code("parameter_invalid_hash")
                .param(&name)),
        }
    }

    /// A list of nested hashes (`items[0][price]=…`).
    #[allow(dead_code)] // for billing line items (checkout sessions, subscriptions)
    pub fn sub_list(&mut self, key: &str) -> Result<Option<Vec<Params>>> {
        let name = self.name(key);
        let bad = || {
            StripeError::invalid("Invalid array")
                .code("parameter_invalid_array")
                .param(&name)
        };
        let items = match self.map.remove(key) {
            None => return Ok(None),
            Some(Value::Object(m)) => indexed(m).ok_or_else(bad)?,
            Some(Value::Array(items)) => items,
            Some(_) => return Err(bad()),
        };
        items
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::Object(map) => Ok(Params {
                    prefix: format!("{name}[{i}]"),
                    map,
                }),
                _ => Err(bad()),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// Accepts and discards a parameter the sandbox has no use for.
    pub fn ignore(&mut self, keys: &[&str]) {
        for k in keys {
            self.map.remove(*k);
        }
    }

    /// Fails with `parameter_unknown` for the first parameter nobody read.
    pub fn finish(self) -> Result<()> {
        match self.map.keys().next() {
            None => Ok(()),
            Some(k) => Err(StripeError::unknown_param(&self.name(k))),
        }
    }
}

/// `{"0": a, "1": b}` → `[a, b]` when every key is an index (order by index).
fn indexed(m: Map<String, Value>) -> Option<Vec<Value>> {
    let mut items: Vec<(usize, Value)> = m
        .into_iter()
        .map(|(k, v)| k.parse::<usize>().ok().map(|i| (i, v)))
        .collect::<Option<Vec<_>>>()?;
    items.sort_by_key(|(i, _)| *i);
    Some(items.into_iter().map(|(_, v)| v).collect())
}
