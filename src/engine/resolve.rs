//! Which eSIM an event is about, and who its customer is (SPEC §5–6).
//!
//! esimTranNo is the stable key; an eSIM known only by orderNo or
//! transactionId (from ORDER_STATUS) adopts the first esimTranNo it is seen
//! with; an ICCID seen with a different esimTranNo than the one it belongs
//! to is a recycled ICCID, hence a new eSIM, and a customer bound by that
//! ICCID stays with the old one.

use chrono::{DateTime, Utc};

use super::codec::read_id;
use super::records::{ident, EsimRecord, StoredBinding};
use super::tx::{alias_value, Tx};
use super::EsimId;
use crate::customers::{IdKind, Recipient};
use crate::event::Identifiers;
use crate::policy::EsimState;
use crate::store::{Space, StoreError};

pub fn alias(tx: &mut Tx, kind: IdKind, value: &str) -> Result<Option<EsimId>, StoreError> {
    Ok(tx
        .get_raw(Space::Aliases, &ident(kind, value))?
        .and_then(|b| read_id(&b)))
}

pub fn record_of(tx: &mut Tx, esim: EsimId) -> Result<Option<EsimRecord>, StoreError> {
    tx.get(Space::Esims, &super::codec::id(esim))
}

/// An eSIM by one identifier (`kind` None tries each kind in lookup order).
pub fn find(
    tx: &mut Tx,
    kind: Option<IdKind>,
    value: &str,
) -> Result<Option<EsimRecord>, StoreError> {
    let kinds: Vec<IdKind> = match kind {
        Some(k) => vec![k],
        None => IdKind::LOOKUP_ORDER.to_vec(),
    };
    for k in kinds {
        if let Some(id) = alias(tx, k, value)? {
            if let Some(rec) = record_of(tx, id)? {
                return Ok(Some(rec));
            }
        }
    }
    Ok(None)
}

/// The alias keys [`resolve`] reads for `ids`.
pub fn alias_keys(ids: &Identifiers) -> Vec<(Space, Vec<u8>)> {
    IdKind::LOOKUP_ORDER
        .into_iter()
        .filter_map(|kind| Some((Space::Aliases, ident(kind, kind.get(ids)?))))
        .collect()
}

/// The binding keys [`recipient_for`] reads for `ids`.
pub fn binding_keys(ids: &Identifiers) -> Vec<(Space, Vec<u8>)> {
    IdKind::LOOKUP_ORDER
        .into_iter()
        .filter_map(|kind| Some((Space::Customers, ident(kind, kind.get(ids)?))))
        .collect()
}

/// Finds the eSIM the identifiers name, or starts a new one, and records
/// what the identifiers teach (aliases, the owner of a pre-bound ICCID).
/// The record is not written: the caller writes it with its new state.
pub fn resolve(
    tx: &mut Tx,
    ids: &Identifiers,
    now: DateTime<Utc>,
) -> Result<EsimRecord, StoreError> {
    tx.prefetch(&alias_keys(ids))?;
    let mut found: Option<EsimRecord> = None;
    let others = [IdKind::Iccid, IdKind::OrderNo, IdKind::TransactionId];
    if let Some(t) = &ids.esim_tran_no {
        if let Some(id) = alias(tx, IdKind::EsimTranNo, t)? {
            found = record_of(tx, id)?;
        } else {
            // Adopt an eSIM known without an esimTranNo, never one with another.
            for kind in others {
                let Some(v) = kind.get(ids) else { continue };
                if let Some(id) = alias(tx, kind, v)? {
                    if let Some(rec) = record_of(tx, id)? {
                        if rec.state.ids.esim_tran_no.is_none() {
                            found = Some(rec);
                            break;
                        }
                    }
                }
            }
        }
    } else {
        for kind in others {
            let Some(v) = kind.get(ids) else { continue };
            if let Some(id) = alias(tx, kind, v)? {
                found = record_of(tx, id)?;
                if found.is_some() {
                    break;
                }
            }
        }
    }
    let mut rec = match found {
        Some(rec) => rec,
        None => EsimRecord::new(tx.next_id(), now),
    };
    // Learn the identifiers; the ICCID moves to this eSIM if it was recycled.
    let known = &mut rec.state.ids;
    if known.esim_tran_no.is_none() {
        known.esim_tran_no = ids.esim_tran_no.clone();
    }
    if ids.iccid.is_some() {
        known.iccid = ids.iccid.clone();
    }
    if known.order_no.is_none() {
        known.order_no = ids.order_no.clone();
    }
    if known.transaction_id.is_none() {
        known.transaction_id = ids.transaction_id.clone();
    }
    for kind in IdKind::LOOKUP_ORDER {
        let Some(v) = kind.get(ids) else { continue };
        let existing = alias(tx, kind, v)?;
        let claim = match kind {
            IdKind::EsimTranNo | IdKind::Iccid => existing != Some(rec.id),
            // An order may hold several eSIMs: the first keeps the alias.
            IdKind::OrderNo | IdKind::TransactionId => existing.is_none(),
        };
        if claim {
            tx.put_raw(Space::Aliases, &ident(kind, v), alias_value(rec.id));
        }
    }
    // A binding made by ICCID before any eSIM was seen with it belongs to
    // the first eSIM that shows up with that ICCID.
    if let (Some(iccid), Some(tran)) = (&ids.iccid, &rec.state.ids.esim_tran_no) {
        let key = ident(IdKind::Iccid, iccid);
        if let Some(mut b) = tx.get::<StoredBinding>(Space::Customers, &key)? {
            if b.iccid_owner.is_none() {
                b.iccid_owner = Some(tran.clone());
                tx.put(Space::Customers, &key, &b);
            }
        }
    }
    Ok(rec)
}

/// The recipient of an eSIM by its identifiers in SPEC §6 order. An ICCID
/// binding counts only for the eSIM that owned the ICCID when it was bound.
pub fn recipient_for(tx: &mut Tx, state: &EsimState) -> Result<Option<Recipient>, StoreError> {
    tx.prefetch(&binding_keys(&state.ids))?;
    for kind in IdKind::LOOKUP_ORDER {
        let Some(v) = kind.get(&state.ids) else {
            continue;
        };
        let Some(b) = tx.get::<StoredBinding>(Space::Customers, &ident(kind, v))? else {
            continue;
        };
        if kind == IdKind::Iccid {
            if let (Some(owner), Some(tran)) = (&b.iccid_owner, &state.ids.esim_tran_no) {
                if tran != owner {
                    continue;
                }
            }
        }
        return Ok(Some(b.recipient));
    }
    Ok(None)
}
