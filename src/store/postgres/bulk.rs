//! `store copy --to URL`'s side in the database: the whole copy loaded in
//! ONE transaction (so a copy that fails half-way leaves the database as
//! empty as it found it, and can simply be run again), multi-row inserts of
//! [`PgStorage::BATCH`] rows, the `ids` sequence moved past every copied id, and the
//! counts read back afterwards.

use super::pool::wait;
use super::schema::table;
use super::{db_error, Open, PgStorage};
use crate::store::{Entry, Space, StoreError};

/// What `load` is given: the rows of one keyspace, a batch at a time.
pub type Batches<'a> = dyn Iterator<Item = Result<(Space, Vec<Entry>), StoreError>> + 'a;

impl PgStorage {
    /// Rows per `INSERT … SELECT unnest(…)` of [`PgStorage::load`]: one
    /// round trip each.
    pub const BATCH: usize = 1000;

    /// Loads `batches` into a database whose keyspaces are all empty
    /// (refused otherwise, naming the first that is not), then makes the
    /// `ids` sequence hand out `next_id` or later. All or nothing.
    ///
    /// The emptiness check and the inserts are in the same transaction,
    /// behind `LOCK TABLE … EXCLUSIVE` on every keyspace, so an instance
    /// writing meanwhile cannot slip rows in between.
    pub fn load(&self, batches: &mut Batches<'_>, next_id: u64) -> Result<(), StoreError> {
        let mut guard = Open(Some(self.client()?));
        let client = guard.0.as_ref().expect("set above");
        let tables: Vec<&str> = Space::ALL.iter().map(|s| table(*s)).collect();
        wait(client.batch_execute(&format!(
            "BEGIN; LOCK TABLE {} IN EXCLUSIVE MODE",
            tables.join(", ")
        )))
        .map_err(db_error)?;
        for space in Space::ALL {
            let sql = format!("SELECT EXISTS (SELECT 1 FROM {})", table(space));
            let row = wait(client.query_one(sql.as_str(), &[])).map_err(db_error)?;
            if row.get::<_, bool>(0) {
                return Err(StoreError::Io(format!(
                    "the target database is not empty: its {} table has rows \
                     (store copy only fills an empty database)",
                    table(space)
                )));
            }
        }
        for batch in batches {
            let (space, rows) = batch?;
            if rows.is_empty() {
                continue;
            }
            let (keys, values): (Vec<Vec<u8>>, Vec<Vec<u8>>) = rows.into_iter().unzip();
            let sql = format!(
                "INSERT INTO {} (key, value) SELECT * FROM unnest($1::bytea[], $2::bytea[])",
                table(space)
            );
            wait(client.execute(sql.as_str(), &[&keys, &values])).map_err(db_error)?;
        }
        let next = i64::try_from(next_id.max(1))
            .map_err(|_| StoreError::Corrupt(format!("next id {next_id} out of range")))?;
        // `false`: the next nextval returns `next` itself.
        wait(client.query_one("SELECT setval('ids', $1, false)", &[&next])).map_err(db_error)?;
        wait(client.batch_execute("COMMIT")).map_err(db_error)?;
        guard.done();
        Ok(())
    }

    /// How many entries `space` holds (what `store copy` compares).
    pub fn count(&self, space: Space) -> Result<u64, StoreError> {
        let client = self.client()?;
        let sql = format!("SELECT count(*) FROM {}", table(space));
        let row = wait(client.query_one(sql.as_str(), &[])).map_err(db_error)?;
        Ok(row.get::<_, i64>(0) as u64)
    }
}
