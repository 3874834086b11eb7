//! Lists: the page envelope every list answers with, its limit and opaque cursors.

use crate::error::{ApiError, ApiResult};

/// A list: a page of `items` and the cursors around it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// The page size asked for (or the number of items when the list is not paged).
    #[schema(minimum = 0)]
    pub limit: i64,
    /// Pass as `cursor` for the next (older) page; `null` on the last page.
    pub next_cursor: Option<String>,
    /// Pass as `cursor` for the previous (newer) page; `null` on the first page.
    pub previous_cursor: Option<String>,
}

impl<T> Page<T> {
    /// A list that is not paged: every item, no cursors.
    pub fn whole(items: Vec<T>) -> Self {
        Page {
            limit: items.len() as i64,
            items,
            next_cursor: None,
            previous_cursor: None,
        }
    }
}

/// A decoded list cursor: (sort stamp, id, forward).
pub type Cursor = (i64, String, bool);

/// `limit` (1 to 100, default 20) and `cursor` of a list request.
pub fn page_params(
    q: &std::collections::HashMap<String, Vec<String>>,
) -> ApiResult<(Option<Cursor>, i64)> {
    let one = |k: &str| q.get(k).and_then(|v| v.last()).cloned();
    let limit = match one("limit") {
        None => 20,
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=100).contains(l))
            .ok_or_else(|| ApiError::query("/limit", "Must be between 1 and 100."))?,
    };
    let cursor = match one("cursor") {
        Some(c) if !c.is_empty() => Some(
            cursor::decode(&c)
                .ok_or_else(|| ApiError::query("/cursor", "Not a cursor this server made."))?,
        ),
        _ => None,
    };
    Ok((cursor, limit))
}

/// Trims the `limit + 1` rows a list read to a page, with its cursors newest first: `next` continues after the
/// last item; `previous` goes back before the first, and exists whenever this page did not start
/// at the top.
pub fn paginate<T>(
    mut rows: Vec<T>,
    limit: i64,
    cursor: Option<&Cursor>,
    key: impl Fn(&T) -> (i64, String),
) -> (Vec<T>, Option<String>, Option<String>) {
    let more = rows.len() as i64 > limit;
    let backwards = matches!(cursor, Some((_, _, false)));
    if more {
        if backwards {
            rows.remove(0);
        } else {
            rows.truncate(limit as usize);
        }
    }
    let next = match (rows.last(), more || backwards) {
        (Some(last), true) => {
            let (c, id) = key(last);
            Some(cursor::encode(c, &id, true))
        }
        _ => None,
    };
    let previous = match (rows.first(), cursor.is_some() && (!backwards || more)) {
        (Some(first), true) => {
            let (c, id) = key(first);
            Some(cursor::encode(c, &id, false))
        }
        _ => None,
    };
    (rows, next, previous)
}

/// Opaque list cursors: base64url of `created_at:id:direction`.
pub mod cursor {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    pub fn encode(created_at: i64, id: &str, after: bool) -> String {
        URL_SAFE_NO_PAD.encode(format!(
            "{created_at}:{id}:{}",
            if after { "n" } else { "p" }
        ))
    }

    pub fn decode(s: &str) -> Option<(i64, String, bool)> {
        let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(s).ok()?).ok()?;
        let mut parts = raw.splitn(3, ':');
        let created = parts.next()?.parse().ok()?;
        let id = parts.next()?.to_string();
        let after = match parts.next()? {
            "n" => true,
            "p" => false,
            _ => return None,
        };
        Some((created, id, after))
    }
}
