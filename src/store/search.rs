//! Search by the data of events: `?data.consignor_id=…` on the events and
//! deliveries listings, and the indexes that make it fast.
//!
//! A condition compares `json_extract(payload, '$."data"."consignor_id"')`
//! with the value asked for: equal as text, or as the number or boolean it
//! spells (`data.fee_paid=true`, `data.count=3`). Without an index that is
//! a scan of every event in the time range asked for; with
//! `--search-index data.consignor_id` the server keeps an expression index
//! on exactly that text, so SQLite seeks it (one b-tree more to write per
//! event published). The SQL is built with the path written in, never
//! bound: an expression index is used only by a query that spells its
//! expression, and with the query planner stability guarantee
//! (`stable_plans`) a bound path could never use one. Paths are checked
//! to be `data` followed by members of letters, digits, `_` and `-` before
//! they get here ([`DataPath::parse`]), so they are safe to write in.

use rusqlite::types::Value as Sql;
use rusqlite::{Connection, params_from_iter};
use sha2::{Digest, Sha256};

use super::events::{
    DELIVERY_COLUMNS_OF_D, Delivery, DeliveryStatus, EVENT_COLUMNS, Event, Ids, delivery_from_row,
    event_from_row,
};
use super::{Context, StoreError};
use crate::catalog::Filter;
use crate::content_filter::DataPath;

/// The SQL expression of a path, the same text for the index and the
/// queries (`table` is `""`, or `"e."` for the events of a join).
fn expression_of(path: &DataPath, table: &str) -> String {
    let members: String = path.members().iter().map(|m| format!(".\"{m}\"")).collect();
    format!("json_extract({table}payload, '$.\"data\"{members}')")
}

/// The name of a path's index: stable for the same path.
fn index_name(path: &DataPath) -> String {
    let digest = Sha256::digest(path.members().join(".").as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("events_search_{hex}")
}

/// One condition: the path equals the value (see the module doc).
#[derive(Debug, Clone)]
pub struct DataEquals {
    pub path: DataPath,
    pub value: String,
}

impl DataEquals {
    /// Appends `AND x IN (?, ?)` and its two values.
    fn push(&self, sql: &mut String, values: &mut Vec<Sql>, table: &str) {
        let x = expression_of(&self.path, table);
        sql.push_str(&format!(" AND {x} IN (?, ?)"));
        values.push(Sql::Text(self.value.clone()));
        let spelled = match self.value.as_str() {
            "true" => Sql::Integer(1),
            "false" => Sql::Integer(0),
            v => match (v.parse::<i64>(), v.parse::<f64>()) {
                (Ok(i), _) => Sql::Integer(i),
                (_, Ok(f)) if f.is_finite() => Sql::Real(f),
                _ => Sql::Null,
            },
        };
        values.push(spelled);
    }
}

/// The `data.…=value` pairs of a query string; a malformed path is an
/// error naming it.
pub fn data_conditions(
    query: &[(String, String)],
    errors: &mut Vec<crate::validation::FieldError>,
) -> Vec<DataEquals> {
    let mut out = Vec::new();
    for (key, value) in query.iter().filter(|(k, _)| k.starts_with("data")) {
        match DataPath::parse(key) {
            Ok(path) if out.len() < MAX_CONDITIONS => out.push(DataEquals {
                path,
                value: value.clone(),
            }),
            Ok(_) => errors.push(crate::validation::FieldError::new(
                key.clone(),
                "too_many",
                format!("at most {MAX_CONDITIONS} data conditions"),
            )),
            Err(why) => errors.push(crate::validation::FieldError::new(
                key.clone(),
                "invalid",
                why,
            )),
        }
    }
    out
}

/// At most this many `data.…` conditions in one query.
const MAX_CONDITIONS: usize = 8;

/// Makes the expression indexes `--search-index` names and drops those
/// it no longer names. Run at start on the writer's connection, before
/// the writer thread: building one on a large database takes a while
/// (once), keeping one costs nothing at start.
pub fn ensure_indexes(conn: &Connection, paths: &[DataPath]) -> Result<(), StoreError> {
    let existing: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'events_search_%'",
        )
        .and_then(|mut stmt| stmt.query_map([], |row| row.get(0))?.collect())
        .context("listing search indexes")?;
    let wanted: Vec<String> = paths.iter().map(index_name).collect();
    for name in existing.iter().filter(|n| !wanted.contains(n)) {
        conn.execute_batch(&format!("DROP INDEX \"{name}\""))
            .context("dropping a search index")?;
        log::info!("search index {name} dropped: --search-index no longer names it");
    }
    for path in paths {
        let name = index_name(path);
        if existing.contains(&name) {
            continue;
        }
        let started = std::time::Instant::now();
        conn.execute_batch(&format!(
            "CREATE INDEX \"{name}\" ON events ({})",
            expression_of(path, "")
        ))
        .context("creating a search index")?;
        log::info!(
            "search index on {path} created in {} ms",
            started.elapsed().as_millis()
        );
    }
    Ok(())
}

/// Which events a listing is narrowed to.
#[derive(Debug, Default)]
pub struct Narrowing<'a> {
    pub data: &'a [DataEquals],
    /// Event creation time, Unix ms: at or after `since`, before `until`.
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// One event (the deliveries listing's `?event_id=`).
    pub event_id: Option<&'a str>,
}

impl Narrowing<'_> {
    /// Appends the conditions on `events`' columns (`table`: `""`, or
    /// `"e."` in a join).
    fn push(&self, sql: &mut String, values: &mut Vec<Sql>, table: &str) {
        for d in self.data {
            d.push(sql, values, table);
        }
        if let Some(since) = self.since {
            sql.push_str(&format!(" AND {table}created_at >= ?"));
            values.push(Sql::Integer(since));
        }
        if let Some(until) = self.until {
            sql.push_str(&format!(" AND {table}created_at < ?"));
            values.push(Sql::Integer(until));
        }
        if let Some(id) = self.event_id {
            sql.push_str(&format!(" AND {table}id = ?"));
            values.push(Sql::Text(id.to_owned()));
        }
    }
}

/// Events whose data match, newest first, older than `cursor`.
pub fn events(
    conn: &Connection,
    narrowing: &Narrowing<'_>,
    event_type: &Filter,
    cursor: Option<&str>,
    limit: usize,
) -> Result<Vec<Event>, StoreError> {
    let mut sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE 1");
    let mut values = Vec::new();
    narrowing.push(&mut sql, &mut values, "");
    match event_type {
        Filter::All => {}
        Filter::Exact(name) => {
            sql.push_str(" AND event_type = ?");
            values.push(Sql::Text(name.clone()));
        }
        Filter::Prefix(prefix) => {
            sql.push_str(" AND substr(event_type, 1, ?) = ?");
            values.push(Sql::Integer(prefix.len() as i64));
            values.push(Sql::Text(prefix.clone()));
        }
    }
    if let Some(cursor) = cursor {
        sql.push_str(" AND id < ?");
        values.push(Sql::Text(cursor.to_owned()));
    }
    sql.push_str(" ORDER BY id DESC LIMIT ?");
    values.push(Sql::Integer(limit as i64));
    conn.prepare_cached(&sql)
        .and_then(|mut stmt| {
            stmt.query_map(params_from_iter(values), event_from_row)?
                .collect()
        })
        .context("searching events")
}

/// Deliveries of the events whose data match, newest first.
pub fn deliveries(
    conn: &Connection,
    narrowing: &Narrowing<'_>,
    webhook_id: Option<&str>,
    status: Option<DeliveryStatus>,
    ids: Ids<'_>,
    cursor: Option<&str>,
    limit: usize,
) -> Result<Vec<Delivery>, StoreError> {
    let mut sql = format!(
        "SELECT {DELIVERY_COLUMNS_OF_D} FROM events e JOIN deliveries d ON d.event_id = e.id WHERE 1"
    );
    let mut values = Vec::new();
    narrowing.push(&mut sql, &mut values, "e.");
    if let Some(w) = webhook_id {
        sql.push_str(" AND d.webhook_id = ?");
        values.push(Sql::Text(w.to_owned()));
    }
    if let Some(s) = status {
        sql.push_str(" AND d.status = ?");
        values.push(Sql::Text(s.as_str().to_owned()));
    }
    match ids {
        Ids::Any => {}
        Ids::Only(json) => {
            sql.push_str(" AND d.id IN (SELECT value FROM json_each(?))");
            values.push(Sql::Text(json.to_owned()));
        }
        Ids::Except(json) => {
            sql.push_str(" AND d.id NOT IN (SELECT value FROM json_each(?))");
            values.push(Sql::Text(json.to_owned()));
        }
    }
    if let Some(cursor) = cursor {
        sql.push_str(" AND d.id < ?");
        values.push(Sql::Text(cursor.to_owned()));
    }
    sql.push_str(" ORDER BY d.id DESC LIMIT ?");
    values.push(Sql::Integer(limit as i64));
    conn.prepare_cached(&sql)
        .and_then(|mut stmt| {
            stmt.query_map(params_from_iter(values), delivery_from_row)?
                .collect()
        })
        .context("searching deliveries")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_checked_and_written_as_one_expression() {
        let path = DataPath::parse("data.consignor_id").unwrap();
        assert_eq!(
            expression_of(&path, ""),
            r#"json_extract(payload, '$."data"."consignor_id"')"#
        );
        assert_eq!(path.to_string(), "data.consignor_id");
        assert_eq!(
            index_name(&path),
            index_name(&DataPath::parse("data.consignor_id").unwrap())
        );
        for bad in [
            "consignor_id",
            "data.",
            "data.a'b",
            "data.a b",
            "data..a",
            "data.a\"x",
        ] {
            assert!(DataPath::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_search_index_is_what_the_query_uses() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::store::schema::migrate(&mut conn).unwrap();
        let path = DataPath::parse("data.consignor_id").unwrap();
        ensure_indexes(&conn, std::slice::from_ref(&path)).unwrap();
        let data = [DataEquals {
            path: path.clone(),
            value: "c1".into(),
        }];
        let narrowing = Narrowing {
            data: &data,
            ..Default::default()
        };
        let mut sql = "EXPLAIN QUERY PLAN SELECT id FROM events WHERE 1".to_owned();
        let mut values = Vec::new();
        narrowing.push(&mut sql, &mut values, "");
        let plan: Vec<String> = conn
            .prepare(&sql)
            .unwrap()
            .query_map(params_from_iter(values), |row| row.get(3))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(
            plan.iter().any(|p| p.contains(&index_name(&path))),
            "{plan:?}"
        );
        // Named no more: dropped.
        ensure_indexes(&conn, &[]).unwrap();
        let left: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name LIKE 'events_search_%'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(left, 0);
    }
}
