//! `backup DIR` on PostgreSQL writes a sled store: the way back to one VM
//! (SPEC §10). One REPEATABLE READ snapshot is copied, so the copy is one
//! point in time while units go on.

use std::path::Path;

use super::pool::wait;
use super::schema::ID_BLOCK;
use super::{db_error, scan_page, Open, PgStorage, PAGE};
use crate::store::{SledStorage, Space, Storage, StoreError};

pub fn to_sled(store: &PgStorage, dir: &Path) -> Result<(), StoreError> {
    let io = |e: std::io::Error| StoreError::Io(e.to_string());
    if dir.exists() && std::fs::read_dir(dir).map_err(io)?.next().is_some() {
        return Err(StoreError::Io(format!(
            "backup directory {} is not empty",
            dir.display()
        )));
    }
    let copy = SledStorage::open(dir, 16 << 20)?;
    let mut guard = Open(Some(store.client()?));
    let client = guard.0.as_ref().expect("set above");
    wait(client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"))
        .map_err(db_error)?;
    for space in Space::ALL {
        let mut from = Vec::new();
        loop {
            let rows = wait(scan_page(client, space, &[], &from, Some(PAGE))).map_err(db_error)?;
            let full = rows.len() as i64 == PAGE;
            if let Some((last, _)) = rows.last() {
                from = last.clone();
                from.push(0);
            }
            copy.unit(&mut |u| {
                for (k, v) in &rows {
                    u.put(space, k, v.clone());
                }
                Ok(())
            })?;
            if !full {
                break;
            }
        }
    }
    // A sequence is outside the snapshot: its current value is at least the
    // one of the snapshot, and skipping ids is allowed.
    let row =
        wait(client.query_one("SELECT last_value, is_called FROM ids", &[])).map_err(db_error)?;
    let (last, called): (i64, bool) = (row.get(0), row.get(1));
    wait(client.batch_execute("COMMIT")).map_err(db_error)?;
    guard.done();
    let next = if called { last + ID_BLOCK } else { last };
    copy.ids_from(next.max(1) as u64)?;
    copy.flush()
}
