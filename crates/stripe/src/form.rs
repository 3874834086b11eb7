//! Stripe's `application/x-www-form-urlencoded` dialect: `a[b][0][c]=v`, `a[]=v`.
//!
//! [`parse`] turns a body or query string into a JSON tree of objects, arrays (only from `[]`)
//! and string leaves; numerically indexed keys (`items[0]`) stay object keys and are read as
//! arrays by whoever expects one, since `metadata[0]` must stay a map. [`encode`] is the inverse
//! for clients: arrays become `a[0]`, `a[1]`, ….

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormError {
    /// The parameter in bracket form (`metadata[a]`).
    pub param: String,
    pub message: String,
}

/// Parses a form body or query string into a JSON object.
pub fn parse(input: &[u8]) -> Result<Map<String, Value>, FormError> {
    let mut root = Map::new();
    for (key, value) in form_urlencoded::parse(input) {
        if key.is_empty() {
            continue;
        }
        let path = split_key(&key).ok_or_else(|| FormError {
            param: key.to_string(),
            message: format!("Invalid parameter name: {key}"),
        })?;
        insert(&mut root, &path, value.into_owned()).map_err(|()| FormError {
            param: key.to_string(),
            message: format!(
                "Invalid value for {key}: the parameter is given both as a value and as a hash or array."
            ),
        })?;
    }
    Ok(root)
}

/// `a[b][]` → `["a", "b", ""]`; `None` for unbalanced brackets.
fn split_key(key: &str) -> Option<Vec<&str>> {
    let (head, mut rest) = match key.find('[') {
        Some(i) => (&key[..i], &key[i..]),
        None => (key, ""),
    };
    if head.is_empty() || head.contains(']') {
        return None;
    }
    let mut out = vec![head];
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[')?;
        let end = inner.find(']')?;
        let seg = &inner[..end];
        if seg.contains('[') {
            return None;
        }
        out.push(seg);
        rest = &inner[end + 1..];
    }
    Some(out)
}

fn insert(map: &mut Map<String, Value>, path: &[&str], value: String) -> Result<(), ()> {
    let (first, rest) = path.split_first().ok_or(())?;
    if rest.is_empty() {
        match map.get(*first) {
            Some(Value::Object(_)) | Some(Value::Array(_)) => return Err(()),
            _ => {
                map.insert((*first).to_string(), Value::String(value));
            }
        }
        return Ok(());
    }
    if rest[0].is_empty() {
        // `a[]=v` (only as the last segment: `a[][b]` is not Stripe's dialect).
        if rest.len() != 1 {
            return Err(());
        }
        let entry = map
            .entry((*first).to_string())
            .or_insert_with(|| Value::Array(Vec::new()));
        return match entry {
            Value::Array(items) => {
                items.push(Value::String(value));
                Ok(())
            }
            _ => Err(()),
        };
    }
    let entry = map
        .entry((*first).to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    match entry {
        Value::Object(child) => insert(child, rest, value),
        _ => Err(()),
    }
}

/// Encodes a JSON object as Stripe form pairs (`a[b]=…`, arrays as `a[0]=…`), in order.
pub fn encode_pairs(value: &Map<String, Value>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (k, v) in value {
        push(&mut out, k.clone(), v);
    }
    out
}

/// Encodes a JSON object as a form body.
pub fn encode(value: &Map<String, Value>) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in encode_pairs(value) {
        ser.append_pair(&k, &v);
    }
    ser.finish()
}

fn push(out: &mut Vec<(String, String)>, key: String, value: &Value) {
    match value {
        Value::Null => out.push((key, String::new())),
        Value::Bool(b) => out.push((key, b.to_string())),
        Value::Number(n) => out.push((key, n.to_string())),
        Value::String(s) => out.push((key, s.clone())),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                push(out, format!("{key}[{i}]"), item);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                push(out, format!("{key}[{k}]"), v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nesting() {
        let m = parse(b"amount=100&metadata[a]=b&metadata[c]=&expand[]=x&expand[]=y&items[0][price]=p&items[1][price]=q&name=a+b%26c").unwrap();
        assert_eq!(
            Value::Object(m),
            json!({"amount": "100", "metadata": {"a": "b", "c": ""}, "expand": ["x", "y"],
                   "items": {"0": {"price": "p"}, "1": {"price": "q"}}, "name": "a b&c"})
        );
    }

    #[test]
    fn conflicts_and_bad_keys() {
        assert!(parse(b"a=1&a[b]=2").is_err());
        assert!(parse(b"a[b]=2&a=1").is_err());
        assert!(parse(b"a[b=2").is_err());
        assert!(parse(b"[b]=2").is_err());
        assert!(parse(b"a[][b]=2").is_err());
    }

    #[test]
    fn encode_round_trip() {
        let v = json!({"amount": 5, "metadata": {"k": "v"}, "items": [{"price": "p"}]});
        let s = encode(v.as_object().unwrap());
        assert_eq!(s, "amount=5&metadata%5Bk%5D=v&items%5B0%5D%5Bprice%5D=p");
        let back = parse(s.as_bytes()).unwrap();
        assert_eq!(back["items"]["0"]["price"], "p");
    }
}
