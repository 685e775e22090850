//! How records are written: one version byte, then the record in postcard
//! (a compact, stable binary serde format: variable-length integers, no
//! field names). The version byte lets a later release change a record's
//! layout and still read the old one; JSON records written before versions
//! existed start with `{` and are migrated when the store opens
//! (`migrate`).

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::store::StoreError;

/// The layout of every record this release writes.
pub const VERSION: u8 = 1;

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(VERSION);
    // Serializing our own record types into a Vec cannot fail: they hold no
    // maps with non-string keys, no untagged enums and no `serde_json::Value`.
    postcard::to_extend(value, out).expect("store records always serialize")
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&VERSION, rest)) => postcard::from_bytes(rest)
            .map_err(|e| StoreError::Corrupt(format!("record of version {VERSION}: {e}"))),
        Some((b'{', _)) => Err(StoreError::Corrupt(
            "a JSON record from before versioned records: the store was not migrated".into(),
        )),
        Some((v, _)) => Err(StoreError::Corrupt(format!(
            "record of version {v}, newer than this release ({VERSION}): upgrade esim-notify"
        ))),
        None => Err(StoreError::Corrupt("empty record".into())),
    }
}

/// Integers that must sort as numbers (ids, sequence numbers, eSIM ids in
/// keys) are written big-endian.
pub fn id(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

pub fn read_id(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_behind_its_version_byte() {
        let v = (42u64, Some("T1".to_string()), vec![1u32, 2]);
        let bytes = encode(&v);
        assert_eq!(bytes[0], VERSION);
        assert_eq!(
            decode::<(u64, Option<String>, Vec<u32>)>(&bytes).unwrap(),
            v
        );
    }

    #[test]
    fn old_newer_and_broken_records_are_named_not_misread() {
        let json = decode::<u64>(br#"{"id":1}"#).unwrap_err().to_string();
        assert!(json.contains("not migrated"), "{json}");
        let newer = decode::<u64>(&[9, 1]).unwrap_err().to_string();
        assert!(newer.contains("upgrade"), "{newer}");
        assert!(decode::<u64>(&[]).is_err());
        assert!(decode::<String>(&[VERSION, 200]).is_err());
    }
}
