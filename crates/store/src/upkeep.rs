//! PostgreSQL: what autovacuum would do to the server's tables, for when it is off or behind.

use crate::{Backend, Result};

/// When [`maintain`] vacuums or analyzes a table: autovacuum's rule, with its thresholds and
/// scale factors as fields.
#[derive(Debug, Clone, Copy)]
pub struct Upkeep {
    /// Vacuumed (and analyzed) once its dead row versions reach this many ...
    pub vacuum_min: i64,
    /// ... and this share of its live rows.
    pub vacuum_share: f64,
    /// Else analyzed once the rows inserted, updated or deleted since its last analysis reach
    /// this many ...
    pub analyze_min: i64,
    /// ... and this share of its live rows.
    pub analyze_share: f64,
}

/// What [`maintain`] did to one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upkept {
    /// Vacuumed and analyzed, with its dead row versions before.
    Vacuumed(String, i64),
    /// Analyzed, with the rows changed since its last analysis.
    Analyzed(String, i64),
}

/// PostgreSQL, where autovacuum may be off or behind: does for this schema's tables (except
/// `skip`) what autovacuum would. A table whose dead row versions passed the `rule` is
/// vacuumed and analyzed; one whose rows changed enough since its last analysis is analyzed
/// (without fresh statistics the planner keeps the sizes it saw when the table was small, and
/// its plans for the apply path's lookups read a whole account's rows once the table has
/// grown). The figures come from PostgreSQL's statistics (flushed about once a second).
/// Nothing on SQLite.
pub async fn maintain(store: &crate::Store, rule: Upkeep, skip: &[&str]) -> Result<Vec<Upkept>> {
    if store.backend() != Backend::Postgres {
        return Ok(Vec::new());
    }
    let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT relname::TEXT, n_dead_tup, n_live_tup, n_mod_since_analyze
         FROM pg_stat_user_tables WHERE schemaname = current_schema()",
    )
    .fetch_all(store.writer())
    .await?;
    let over =
        |n: i64, min: i64, share: f64, live: i64| n >= min && n as f64 >= share * live as f64;
    let mut done = Vec::new();
    for (table, dead, live, changed) in rows {
        if skip.contains(&table.as_str()) {
            continue;
        }
        // A name from the catalogue, quoted as an identifier.
        let name = format!("\"{}\"", table.replace('"', "\"\""));
        let (sql, what) = if over(dead, rule.vacuum_min, rule.vacuum_share, live) {
            (
                format!("VACUUM (ANALYZE) {name}"),
                Upkept::Vacuumed(table, dead),
            )
        } else if over(changed, rule.analyze_min, rule.analyze_share, live) {
            (format!("ANALYZE {name}"), Upkept::Analyzed(table, changed))
        } else {
            continue;
        };
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(store.writer())
            .await?;
        done.push(what);
    }
    Ok(done)
}
