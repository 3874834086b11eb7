//! Filtered list queries built at run time, one placeholder syntax for both databases.

use sqlx::Arguments;
use sqlx::any::AnyArguments;

/// A `SELECT … WHERE …` under construction: each clause names its value with `?`, numbered
/// `$n` as it is bound (PostgreSQL's syntax, which SQLite reads too). Only the code's own
/// fragments go into the text; every value is bound.
pub(crate) struct Filtered {
    sql: String,
    args: AnyArguments,
    n: usize,
}

impl Filtered {
    /// Starts from `select`, which holds no placeholder.
    pub fn new(select: &str) -> Filtered {
        Filtered {
            sql: select.to_string(),
            args: AnyArguments::default(),
            n: 0,
        }
    }

    /// Appends text without values.
    pub fn push(&mut self, raw: &str) {
        self.sql.push_str(raw);
    }

    /// Appends `clause`, its one `?` bound to the text `v`.
    pub fn bind_str(&mut self, clause: &str, v: &str) {
        self.placeholder(clause);
        let _ = self.args.add(v.to_string());
    }

    /// Appends `clause`, its one `?` bound to the integer `v`.
    pub fn bind_int(&mut self, clause: &str, v: i64) {
        self.placeholder(clause);
        let _ = self.args.add(v);
    }

    /// ` AND column IN (…)` over `values`; nothing when there are none.
    pub fn any_of(&mut self, column: &str, values: &[String]) {
        if values.is_empty() {
            return;
        }
        self.sql.push_str(&format!(" AND {column} IN ("));
        for (i, v) in values.iter().enumerate() {
            self.bind_str(if i == 0 { "?" } else { ", ?" }, v);
        }
        self.sql.push(')');
    }

    pub fn finish(self) -> (String, AnyArguments) {
        (self.sql, self.args)
    }

    fn placeholder(&mut self, clause: &str) {
        self.n += 1;
        self.sql
            .push_str(&clause.replace('?', &format!("${}", self.n)));
    }
}

/// `$first, $first+1, …` for `n` values.
pub(crate) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Placeholders for `n` values bound in order, the first being the statement's `first`:
/// `$first, …` on PostgreSQL; plain `?` on SQLite, where sqlx finds each numbered parameter's
/// place by its name, and SQLite looks names up in a list: binding grows with the square of
/// their number. The statement's other parameters must then be `?` too.
pub(crate) fn positional(backend: crate::Backend, first: usize, n: usize) -> String {
    match backend {
        crate::Backend::Postgres => placeholders(first, n),
        crate::Backend::Sqlite => vec!["?"; n].join(", "),
    }
}

/// `rows` groups of `columns` placeholders, `(…), (…)`, for a multi-row `VALUES` whose values
/// are bound row by row, the first being the statement's first parameter (see [`positional`]).
pub(crate) fn value_rows(backend: crate::Backend, rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|i| format!("({})", positional(backend, i * columns + 1, columns)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The most rows of one multi-row statement on SQLite (see [`row_chunks`]).
const SQLITE_CHUNK: usize = 64;

/// The statements a multi-row write of `rows` is cut into, at most `max` rows each.
///
/// On SQLite each holds a power of two rows, at most 64, the largest first (45 rows: 32, 8,
/// 4 and 1), so that a statement's text has one of a few shapes per table: sqlx keeps each
/// shape prepared ([`keeps_shapes`]), where a text that changed with the number of rows was
/// parsed and planned again by every write (about a tenth of the write connection's thread in
/// the webhooks benchmark). The extra statements cost a hand-off each, tens of microseconds.
/// On PostgreSQL chunks of `max`, as one statement costs a network round trip there.
pub(crate) fn row_chunks<T>(backend: crate::Backend, rows: &[T], max: usize) -> Vec<&[T]> {
    match backend {
        crate::Backend::Postgres => rows.chunks(max.max(1)).collect(),
        crate::Backend::Sqlite => {
            let mut out = Vec::new();
            let mut rest = rows;
            while !rest.is_empty() {
                let fits = rest.len().min(max.clamp(1, SQLITE_CHUNK));
                // The largest power of two not above `fits` (which is at least 1).
                let n = 1usize << (usize::BITS - 1 - fits.leading_zeros());
                let (head, tail) = rest.split_at(n);
                out.push(head);
                rest = tail;
            }
            out
        }
    }
}

/// Whether sqlx should keep a statement of [`row_chunks`] prepared: on SQLite it has one of a
/// few shapes; on PostgreSQL a new text for each number of rows would push the fixed
/// statements out of the connection's cache.
pub(crate) fn keeps_shapes(backend: crate::Backend) -> bool {
    backend == crate::Backend::Sqlite
}

/// A list of text values for `IN (…)`.
///
/// On SQLite it is one parameter, a JSON array read by `json_each`: the statement's text is
/// then the same for any number of values, so SQLite parses it once and sqlx keeps it
/// prepared. With a placeholder per value each statement was new text, parsed every time
/// (sqlx keeps such statements out of its cache: they would push the others out). SQLite
/// still reads the list through the column's index (`SEARCH … USING INDEX`, then
/// `LIST SUBQUERY`). On PostgreSQL, a placeholder per value.
pub(crate) struct List<'a> {
    backend: crate::Backend,
    values: &'a [&'a str],
}

impl<'a> List<'a> {
    pub fn new(backend: crate::Backend, values: &'a [&'a str]) -> List<'a> {
        List { backend, values }
    }

    /// The inside of `IN (…)`, its first placeholder being `$first`.
    pub fn sql(&self, first: usize) -> String {
        match self.backend {
            crate::Backend::Sqlite => format!("SELECT value FROM json_each(${first})"),
            crate::Backend::Postgres => placeholders(first, self.values.len()),
        }
    }

    /// The statement's arguments: the text values `leading` (its parameters before the list),
    /// then the list's values, in the order of their placeholders.
    pub fn args(&self, leading: &[&str]) -> AnyArguments {
        let mut args = AnyArguments::default();
        for v in leading {
            let _ = args.add(v.to_string());
        }
        self.append(&mut args);
        args
    }

    /// Binds the list's values after the arguments already in `args`.
    pub fn append(&self, args: &mut AnyArguments) {
        match self.backend {
            crate::Backend::Sqlite => {
                // An array of strings always serialises.
                let json = serde_json::to_string(self.values).unwrap_or_default();
                let _ = args.add(json);
            }
            crate::Backend::Postgres => {
                for v in self.values {
                    let _ = args.add(v.to_string());
                }
            }
        }
    }

    /// `sql` with its `{list}` filled in, and its arguments: the text values `leading` (`$1`,
    /// …, before the list), then the list's.
    pub fn fill(&self, sql: &str, leading: &[&str]) -> (String, AnyArguments) {
        (
            sql.replace("{list}", &self.sql(leading.len() + 1)),
            self.args(leading),
        )
    }

    /// Whether sqlx should keep the statement prepared: on SQLite its text is the same every
    /// time; on PostgreSQL a new text for each length would push the others out of the
    /// connection's cache.
    pub fn persistent(&self) -> bool {
        self.backend == crate::Backend::Sqlite
    }
}

/// The rows of `sql` over every value of `list`, `chunk` values per statement: `sql` holds
/// `{list}` for the inside of its `IN (…)`, after its text parameters `leading` (`$1`, …).
/// Only the code's own fragments go into `sql`; every value is bound.
pub(crate) async fn rows_in_list(
    db: &mut crate::Conn,
    sql: &str,
    leading: &[&str],
    list: &[&str],
    chunk: usize,
) -> crate::Result<Vec<sqlx::any::AnyRow>> {
    let backend = crate::Backend::of(db);
    let mut out = Vec::new();
    for part in list.chunks(chunk.max(1)) {
        let list = List::new(backend, part);
        let (sql, args) = list.fill(sql, leading);
        let q = sqlx::query_with(sqlx::AssertSqlSafe(sql), args).persistent(list.persistent());
        out.extend(q.fetch_all(&mut *db).await?);
    }
    Ok(out)
}

/// Runs `sql` over every value of `list`, `chunk` values per statement: `sql` holds `{list}`
/// for the inside of its `IN (…)`, after its parameters `$1` (the text `text`) and `$2` (the
/// integer `number`). Only the code's own fragments go into `sql`; every value is bound.
pub(crate) async fn execute_in_list(
    db: &mut crate::Conn,
    sql: &str,
    text: &str,
    number: i64,
    list: &[&str],
    chunk: usize,
) -> crate::Result<()> {
    let backend = crate::Backend::of(db);
    for part in list.chunks(chunk.max(1)) {
        let list = List::new(backend, part);
        let mut args = AnyArguments::default();
        let _ = args.add(text.to_string());
        let _ = args.add(number);
        list.append(&mut args);
        let sql = sql.replace("{list}", &list.sql(3));
        sqlx::query_with(sqlx::AssertSqlSafe(sql), args)
            .persistent(list.persistent())
            .execute(&mut *db)
            .await?;
    }
    Ok(())
}

/// The values of a JSON array that SQLite built in one row (`json_group_array`): on SQLite,
/// statements on the writer that would return a row per value return this one row instead,
/// as sqlx hands SQLite's rows over from its connection thread one at a time. `what` names
/// the values in the error.
pub(crate) fn json_array<T: serde::de::DeserializeOwned>(
    text: &str,
    what: &str,
) -> crate::Result<Vec<T>> {
    serde_json::from_str(text).map_err(|e| crate::StoreError::Corrupt(format!("{what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Backend;

    #[test]
    fn sqlite_writes_rows_in_chunks_of_a_power_of_two() {
        let rows: Vec<usize> = (0..45).collect();
        let sizes =
            |b, max| -> Vec<usize> { row_chunks(b, &rows, max).iter().map(|c| c.len()).collect() };
        assert_eq!(sizes(Backend::Sqlite, 100), [32, 8, 4, 1]);
        assert_eq!(sizes(Backend::Sqlite, 512), [32, 8, 4, 1]);
        assert_eq!(sizes(Backend::Sqlite, 16), [16, 16, 8, 4, 1]);
        assert_eq!(sizes(Backend::Postgres, 100), [45]);
        assert_eq!(sizes(Backend::Postgres, 20), [20, 20, 5]);
        // Every row once, in order.
        let flat: Vec<usize> = row_chunks(Backend::Sqlite, &rows, 100).concat();
        assert_eq!(flat, rows);
        assert!(row_chunks(Backend::Sqlite, &rows[..0], 100).is_empty());
        let all: Vec<usize> = (0..300).collect();
        assert!(
            row_chunks(Backend::Sqlite, &all, 100)
                .iter()
                .all(|c| c.len() <= 64)
        );
    }
}
