//! Key layouts. Integers are big-endian so that sled's byte order is numeric
//! order: the queue iterates oldest first and an eSIM's log reads in order.

use crate::customers::IdKind;

pub fn id(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

pub fn read_id(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?))
}

/// `t:26042216320015`, `i:8910300000059824319`, ... for aliases and bindings.
pub fn ident(kind: IdKind, value: &str) -> Vec<u8> {
    format!("{}:{}", kind.tag(), value).into_bytes()
}

/// An eSIM's log entry: the eSIM, then a sequence number.
pub fn log(esim: u64, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&esim.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}
