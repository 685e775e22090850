//! The PostgreSQL schema and its versioned migrations.
//!
//! Each migration runs once, in its own transaction, and records its number
//! in `schema_version`. All of them run at open under a session advisory
//! lock, so instances that start together on an empty database create the
//! schema once: the second waits for the first, then finds nothing to do.

use tokio_postgres::Client;

use super::super::Space;

/// The advisory lock held while migrating (an arbitrary constant: "esimsch").
const SCHEMA_LOCK: i64 = 0x0065_7369_6d73_6368;

/// Ids the `ids` sequence hands out per `nextval`: a unit that needs ids
/// takes one block (one round trip), as sled reserves a block per write.
pub const ID_BLOCK: i64 = 1024;

/// The table holding one [`Space`]: `key bytea primary key, value bytea`.
/// Stable: it is the layout in the database.
pub fn table(space: Space) -> &'static str {
    match space {
        Space::Dedup => "dedup",
        Space::Events => "events",
        Space::Esims => "esims",
        Space::Aliases => "aliases",
        Space::Customers => "customers",
        Space::Queue => "queue",
        Space::Dead => "dead",
        Space::Log => "log",
        Space::Suppress => "suppress",
        Space::Meta => "meta",
        Space::SetAside => "set_aside",
        Space::Sent => "sent",
        Space::Stats => "stats",
        Space::ApiKeys => "api_keys",
    }
}

/// Migration `n` (from 1) is `MIGRATIONS[n - 1]`. Append only: a released
/// migration never changes, since databases already ran it. So the first
/// one names its tables itself rather than looping over [`Space::ALL`]: a
/// keyspace added later gets its table from a migration of its own.
fn migrations() -> Vec<String> {
    let mut first = String::new();
    for name in [
        "dedup",
        "events",
        "esims",
        "aliases",
        "customers",
        "queue",
        "dead",
        "log",
        "suppress",
        "meta",
        "set_aside",
    ] {
        first.push_str(&format!(
            "CREATE TABLE {name} (key bytea PRIMARY KEY, value bytea NOT NULL);\n"
        ));
    }
    first.push_str(&format!(
        "CREATE SEQUENCE ids AS bigint START WITH 1 INCREMENT BY {ID_BLOCK};\n"
    ));
    vec![
        first,
        // 2: the columns a group of instances sends from (SPEC §10): which
        // eSIM a queued notice is about and when it is due, read from its
        // bytes by the engine's indexer; the lease an instance holds on it
        // (until when, by whom, under which fencing token); and the GCRA
        // buckets of the group's rate limits.
        "ALTER TABLE queue ADD COLUMN esim bigint, ADD COLUMN due timestamptz, \
             ADD COLUMN recheck boolean NOT NULL DEFAULT false, \
             ADD COLUMN lease_until timestamptz, ADD COLUMN owner text, \
             ADD COLUMN token bigint NOT NULL DEFAULT 0;\n\
         CREATE INDEX queue_due ON queue (due);\n\
         CREATE INDEX queue_esim ON queue (esim, key);\n\
         CREATE TABLE rates (key bytea PRIMARY KEY, tat timestamptz NOT NULL);\n"
            .to_string(),
        // 3: what a mail provider's report is matched against (a sent
        // message's id to its notice) and the daily counters of
        // `/admin/stats` (issue 20).
        "CREATE TABLE sent (key bytea PRIMARY KEY, value bytea NOT NULL);\n\
         CREATE TABLE stats (key bytea PRIMARY KEY, value bytea NOT NULL);\n"
            .to_string(),
        // 4: the shop's API keys (issue 21), read by every instance.
        "CREATE TABLE api_keys (key bytea PRIMARY KEY, value bytea NOT NULL);\n".to_string(),
        // Later migrations go here, one string each, in the order they ran.
    ]
}

/// The schema version this binary writes.
pub fn current() -> i32 {
    migrations().len() as i32
}

/// Brings the database to [`current`]; refuses a database a newer release
/// already upgraded (its layout is unknown to this one).
pub async fn migrate(client: &Client) -> Result<(), String> {
    let e = |e: tokio_postgres::Error| format!("migrating the schema: {e}");
    client
        .execute("SELECT pg_advisory_lock($1)", &[&SCHEMA_LOCK])
        .await
        .map_err(e)?;
    let result = run(client).await;
    // Released on error too; a lost connection releases it anyway.
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&SCHEMA_LOCK])
        .await;
    let at = result.map_err(e)?;
    unlocked.map_err(e)?;
    if at > current() {
        return Err(format!(
            "the database's schema is version {at}, newer than this release's {}: \
             run the release that upgraded it",
            current()
        ));
    }
    Ok(())
}

/// Applies the missing migrations; returns the version found before.
async fn run(client: &Client) -> Result<i32, tokio_postgres::Error> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_version (
                 version integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
    let row = client
        .query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])
        .await?;
    let at: i32 = row.get(0);
    for (i, sql) in migrations().iter().enumerate() {
        let version = i as i32 + 1;
        if version <= at {
            continue;
        }
        client
            .batch_execute(&format!(
                "BEGIN;\n{sql}\nINSERT INTO schema_version (version) VALUES ({version});\nCOMMIT;"
            ))
            .await?;
    }
    Ok(at)
}
