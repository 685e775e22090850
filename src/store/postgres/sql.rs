//! Every statement the backend sends, in one place, so that all of them are
//! prepared once when the store opens ([`check`]): SQL this release gets
//! wrong, or a schema that is not the one it expects, stops the start with
//! the statement named, instead of failing the first webhook that needs it.

use tokio_postgres::Client;

use super::schema::table;
use crate::store::Space;

/// The due head of each eSIM's queue, leased to one instance: a head is
/// the eSIM's oldest queued notice, free when it never had a lease or its
/// lease ran out (then it is taken over, and the old owner returned so the
/// rescue is recorded). `SKIP LOCKED`: instances claiming at once take
/// different heads instead of waiting for each other. The token goes up by
/// one per claim: the fencing token every outcome names.
pub const CLAIM: &str = "WITH c AS (
         SELECT q.key, q.owner, q.lease_until FROM queue q
         WHERE q.esim IS NOT NULL AND q.due <= now()
           AND (q.lease_until IS NULL OR q.lease_until <= now())
           AND NOT EXISTS (SELECT 1 FROM queue p
                           WHERE p.esim = q.esim AND p.key < q.key)
         ORDER BY q.due
         LIMIT $1
         FOR UPDATE OF q SKIP LOCKED)
     UPDATE queue SET lease_until = now() + make_interval(secs => $2),
                      owner = $3, token = queue.token + 1
     FROM c WHERE queue.key = c.key
     RETURNING queue.key, queue.token, c.owner, c.lease_until IS NOT NULL";

/// Extends a lease still held under its token.
pub const RENEW: &str = "UPDATE queue SET lease_until = now() + make_interval(secs => $3)
     WHERE key = $1 AND token = $2 AND lease_until IS NOT NULL";

/// Lets go of a lease still held under its token.
pub const RELEASE: &str = "UPDATE queue SET lease_until = NULL, owner = NULL
     WHERE key = $1 AND token = $2";

/// Seconds until the first queued notice is due or its lease runs out.
pub const NEXT_DUE: &str =
    "SELECT greatest(extract(epoch FROM min(greatest(due, lease_until)) - now()), 0)::float8
     FROM queue WHERE esim IS NOT NULL";

/// Makes the heads of these eSIMs due now when they wait for news.
pub const RECHECK_HEADS: &str = "UPDATE queue SET due = now()
     WHERE recheck AND due > now() AND key IN (
         SELECT DISTINCT ON (esim) key FROM queue
         WHERE esim = ANY($1) ORDER BY esim, key)";

/// One cell of a GCRA bucket. Taken: the row's new arrival time, and no
/// wait. Refused: the row unchanged, and how long until a cell is free.
pub const TAKE: &str = "WITH taken AS (
         INSERT INTO rates AS r (key, tat)
         VALUES ($1, now() + make_interval(secs => $2))
         ON CONFLICT (key) DO UPDATE
             SET tat = greatest(r.tat, now()) + make_interval(secs => $2)
             WHERE greatest(r.tat, now()) - make_interval(secs => $3) <= now()
         RETURNING 1)
     SELECT (SELECT count(*) FROM taken)::int8,
            coalesce((SELECT extract(epoch FROM
                         tat - make_interval(secs => $3) - now())::float8
                      FROM rates WHERE key = $1), 0)";

/// Gives a cell back (a send that did not happen).
pub const GIVE_BACK: &str = "UPDATE rates SET tat = tat - make_interval(secs => $2) WHERE key = $1";

/// Buckets that are full again hold nothing worth keeping.
pub const FORGET_FULL: &str = "DELETE FROM rates WHERE tat < now()";

/// Inside a unit: the token a queued notice is held under, locked.
pub const HOLDS: &str = "SELECT token FROM queue WHERE key = $1 FOR UPDATE";

/// Inside a unit: the advisory lock of one key ([`super::unit::key_lock`]).
pub const KEY_LOCK: &str = "SELECT pg_advisory_xact_lock($1::int4, $2::int4)";

/// Inside a unit: the locks of the keys it writes without having read them,
/// taken one after the other in the arrays' (sorted) order.
pub const KEY_LOCKS: &str = "SELECT pg_advisory_xact_lock(a, b) \
     FROM unnest($1::int4[], $2::int4[]) AS l(a, b)";

/// A block of ids ([`super::schema::ID_BLOCK`] per call).
pub const NEXT_IDS: &str = "SELECT nextval('ids')";

/// Queue rows an older release wrote without the group's columns.
pub const UNINDEXED: &str =
    "SELECT key, value FROM queue WHERE esim IS NULL AND due IS NULL ORDER BY key LIMIT $1";

/// Fills one row's group columns.
pub const INDEX_ONE: &str = "UPDATE queue SET esim = $2, due = $3, recheck = $4 WHERE key = $1";

/// A unit's queue writes with their group columns. The lease columns are
/// not touched: a notice rewritten while an instance sends it (a
/// re-address) stays held.
pub const QUEUE_UPSERT: &str = "INSERT INTO queue (key, value, esim, due, recheck) \
     SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::int8[], \
                          $4::timestamptz[], $5::bool[]) \
     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, \
         esim = EXCLUDED.esim, due = EXCLUDED.due, recheck = EXCLUDED.recheck";

/// A unit's deletes in one keyspace.
pub fn delete(space: Space) -> String {
    format!("DELETE FROM {} WHERE key = ANY($1::bytea[])", table(space))
}

/// A unit's writes in one keyspace (values only).
pub fn upsert(space: Space) -> String {
    format!(
        "INSERT INTO {} (key, value) \
         SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        table(space)
    )
}

/// A value that only grows, raised apart from any unit (see
/// [`crate::store::Unit::put_latest`]).
pub fn latest(space: Space) -> String {
    let t = table(space);
    format!(
        "INSERT INTO {t} (key, value) VALUES ($1, $2) \
         ON CONFLICT (key) DO UPDATE SET value = greatest({t}.value, EXCLUDED.value)"
    )
}

/// One value by key.
pub fn value_of(space: Space) -> String {
    format!("SELECT value FROM {} WHERE key = $1", table(space))
}

/// Entries from `$1` on, in key order: below `$2` when `bounded`, at most
/// the last parameter's count when `limited`.
pub fn scan(space: Space, bounded: bool, limited: bool) -> String {
    let mut sql = format!("SELECT key, value FROM {} WHERE key >= $1", table(space));
    if bounded {
        sql.push_str(" AND key < $2");
    }
    sql.push_str(" ORDER BY key");
    if limited {
        sql.push_str(if bounded { " LIMIT $3" } else { " LIMIT $2" });
    }
    sql
}

/// Every statement, as [`check`] prepares them.
fn all() -> Vec<String> {
    let mut all: Vec<String> = [
        CLAIM,
        RENEW,
        RELEASE,
        NEXT_DUE,
        RECHECK_HEADS,
        TAKE,
        GIVE_BACK,
        FORGET_FULL,
        HOLDS,
        KEY_LOCK,
        KEY_LOCKS,
        NEXT_IDS,
        UNINDEXED,
        INDEX_ONE,
        QUEUE_UPSERT,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for space in Space::ALL {
        all.extend([delete(space), upsert(space), value_of(space), latest(space)]);
        for (bounded, limited) in [(false, false), (false, true), (true, false), (true, true)] {
            all.push(scan(space, bounded, limited));
        }
    }
    all
}

/// Prepares every statement once on `client` (the server parses and plans
/// each against the schema just migrated).
pub async fn check(client: &Client) -> Result<(), String> {
    for sql in all() {
        if let Err(e) = client.prepare(&sql).await {
            let first = sql.lines().next().unwrap_or_default().trim();
            return Err(format!(
                "the statement \"{first}…\" does not prepare: {}",
                super::db_error(e)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_keyspace_has_its_statements() {
        // 15 fixed ones, and 4 + 4 scans per keyspace.
        assert_eq!(all().len(), 15 + 8 * Space::ALL.len());
        assert!(all().iter().any(|s| s.contains("FROM api_keys")));
    }
}
