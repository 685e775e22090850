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
     WHERE key = $1 AND token = $2 AND lease_until IS NOT NULL
     RETURNING 1";

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

/// Ends a unit, sent in the same flight as its writes.
pub const COMMIT: &str = "COMMIT";

/// Opens a transaction whose commit does not wait for the WAL flush (the
/// lease and rate-bucket writes a crash may lose; see `outbox`).
pub const BEGIN_NO_WAL_WAIT: &str = "BEGIN; SET LOCAL synchronous_commit TO off";

/// A block of ids ([`super::schema::ID_BLOCK`] per call).
pub const NEXT_IDS: &str = "SELECT nextval('ids')";

/// Queue rows an older release wrote without the group's columns.
pub const UNINDEXED: &str =
    "SELECT key, value FROM queue WHERE esim IS NULL AND due IS NULL ORDER BY key LIMIT $1";

/// Fills one row's group columns.
pub const INDEX_ONE: &str = "UPDATE queue SET esim = $2, due = $3, recheck = $4 WHERE key = $1";

/// A unit's writes, all keyspaces in one statement (a writable `WITH` per
/// keyspace and kind), so that they cost the server one statement, not one
/// per keyspace. `deletes`: keyspaces with keys to delete (`$n` an array of
/// keys); `upserts`: keyspaces with keys and values to write (two arrays;
/// five for the queue when `queue_columns`: its eSIM, due time and recheck
/// flag for the group's claim). The queue's lease columns are not touched:
/// a notice rewritten while an instance sends it (a re-address) stays held.
/// Parameters are numbered in that order.
pub fn writes(deletes: &[Space], upserts: &[Space], queue_columns: bool) -> String {
    let mut parts = Vec::new();
    let mut n = 1;
    for space in deletes {
        parts.push(format!(
            "DELETE FROM {} WHERE key = ANY(${n}::bytea[])",
            table(*space)
        ));
        n += 1;
    }
    for space in upserts {
        if *space == Space::Queue && queue_columns {
            parts.push(format!(
                "INSERT INTO queue (key, value, esim, due, recheck) \
                 SELECT * FROM unnest(${}::bytea[], ${}::bytea[], ${}::int8[], \
                                      ${}::timestamptz[], ${}::bool[]) \
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, \
                     esim = EXCLUDED.esim, due = EXCLUDED.due, recheck = EXCLUDED.recheck",
                n,
                n + 1,
                n + 2,
                n + 3,
                n + 4
            ));
            n += 5;
        } else {
            parts.push(format!(
                "INSERT INTO {} (key, value) \
                 SELECT * FROM unnest(${}::bytea[], ${}::bytea[]) \
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                table(*space),
                n,
                n + 1
            ));
            n += 2;
        }
    }
    let ctes: Vec<String> = parts
        .iter()
        .enumerate()
        .map(|(i, p)| format!("w{i} AS ({p})"))
        .collect();
    format!("WITH {} SELECT 1", ctes.join(", "))
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

/// The values of several keys in several keyspaces, in one statement: `$n`
/// is the array of keys wanted from `spaces[n - 1]`; each row answers with
/// that position (from 0), the key and the value (absent keys are missing
/// from the answer).
pub fn values_of(spaces: &[Space]) -> String {
    spaces
        .iter()
        .enumerate()
        .map(|(i, space)| {
            format!(
                "SELECT {i}::int4, key, value FROM {} WHERE key = ANY(${}::bytea[])",
                table(*space),
                i + 1
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ")
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
        COMMIT,
        NEXT_IDS,
        UNINDEXED,
        INDEX_ONE,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Every part of a unit's reads and writes, in one statement each.
    all.push(values_of(&Space::ALL));
    all.push(writes(&Space::ALL, &Space::ALL, true));
    all.push(writes(&Space::ALL, &Space::ALL, false));
    for space in Space::ALL {
        all.extend([value_of(space), latest(space)]);
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
    fn the_writes_number_their_parameters_in_order() {
        let w = writes(&[Space::Queue], &[Space::Dedup, Space::Queue], true);
        assert!(w.starts_with("WITH w0 AS (DELETE FROM queue WHERE key = ANY($1::bytea[]))"));
        assert!(w.contains("unnest($2::bytea[], $3::bytea[])"));
        assert!(w.contains("unnest($4::bytea[], $5::bytea[], $6::int8[]"));
        assert!(w.contains("$8::bool[]"));
        assert!(w.ends_with(" SELECT 1"));
    }

    #[test]
    fn every_keyspace_has_its_statements() {
        // 15 fixed ones, the reads, the writes two ways, and 2 + 4 scans
        // per keyspace.
        assert_eq!(all().len(), 15 + 3 + 6 * Space::ALL.len());
        assert!(all().iter().any(|s| s.contains("FROM api_keys")));
    }
}
