//! What operators see of the store, in the shapes both the admin API and the
//! CLI use: the CLI prints the same rows whether it read the store itself
//! (no server running) or asked a running server, so the rows, their
//! builders and the checks both paths share live here, apart from HTTP.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::customers::mask_email;
use crate::engine::{BindReport, DeadLetter, Engine, EsimId, QueuedNotice, Suppression};
use crate::store::StoreError;

/// One queued notice as operators see it (`GET /admin/outbox`, `outbox`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxRow {
    pub id: u64,
    /// The eSIM's esimTranNo, else its iccid, else the engine's own number.
    pub esim: String,
    pub recipient: String,
    pub template: String,
    /// Data notices: the threshold crossed (beyond the SPEC's columns, but
    /// it is what tells two data notices apart).
    #[serde(default)]
    pub level: Option<f64>,
    pub attempts: u32,
    pub next_attempt: DateTime<Utc>,
    pub waiting_for: Option<String>,
    pub last_error: Option<String>,
}

/// One dead letter: the outbox shape plus why it died.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadRow {
    #[serde(flatten)]
    pub notice: OutboxRow,
    pub reason: String,
    pub died_at: DateTime<Utc>,
}

/// What `POST /admin/dead/{id}/retry` answers: the requeued notice, and the
/// automatic suppression its own failure had added, if the retry lifted one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryAnswer {
    #[serde(flatten)]
    pub notice: OutboxRow,
    #[serde(default)]
    pub lifted_suppression: Option<Suppression>,
}

/// An eSIM's identifiers under their wire names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EsimIds {
    #[serde(rename = "esimTranNo")]
    pub esim_tran_no: Option<String>,
    pub iccid: Option<String>,
    #[serde(rename = "orderNo")]
    pub order_no: Option<String>,
    #[serde(rename = "transactionId")]
    pub transaction_id: Option<String>,
}

/// One parked notice (`GET /admin/parked`, `outbox --parked`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParkedRow {
    /// The eSIM's identifiers as one group, and the same at the top level,
    /// where SPEC §4 lists them beside `template` (a script filtering rows
    /// by `iccid` needs no nesting).
    pub esim: EsimIds,
    #[serde(flatten)]
    pub ids: EsimIds,
    pub template: String,
    pub level: Option<f64>,
    pub parked_at: DateTime<Utc>,
    /// `parked_at + customers.park_for`: bind a customer before then.
    pub expires_at: DateTime<Utc>,
}

/// Why a dead letter stays where it is, and what lifts the suppression
/// that keeps it there (the 409 of a retry, and the CLI's message).
pub fn retry_refused(id: u64, s: &Suppression) -> String {
    format!(
        "dead letter {id} stays: {email} is suppressed ({reason}, since {at}), which a retry never lifts; \
         `esim-notify suppress remove {email}` lifts it, then retry",
        email = s.email,
        reason = s.describe(),
        at = s.since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

/// What `PUT /admin/customers` answers (and `customers add`/`import` say).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindSummary {
    pub status: String,
    pub released: usize,
    pub superseded: usize,
    /// Each identifier that was bound to another address (SPEC §4): binding
    /// an eSIM to a second person moves its emails, which must not go unseen.
    #[serde(default)]
    pub replaced: Vec<ReplacedRow>,
}

/// One identifier a binding took from another address, that address masked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplacedRow {
    pub identifier: String,
    pub value: String,
    pub email: String,
}

impl BindSummary {
    pub fn of(report: &BindReport) -> BindSummary {
        BindSummary {
            status: "bound".into(),
            released: report.released.len(),
            superseded: report.superseded,
            replaced: report
                .replaced
                .iter()
                .map(|r| ReplacedRow {
                    identifier: r.identifier.wire_name().into(),
                    value: r.value.clone(),
                    email: mask_email(&r.email),
                })
                .collect(),
        }
    }

    /// `iccid 8943… was bound to a***@example.com`, one per replaced identifier.
    pub fn replaced_lines(&self) -> Vec<String> {
        self.replaced
            .iter()
            .map(|r| {
                format!(
                    "{} {} was bound to {}: its emails now go to the new address",
                    r.identifier, r.value, r.email
                )
            })
            .collect()
    }
}

/// Labels eSIMs by the identifier an operator knows them by, reading each
/// eSIM once however many notices it has.
pub struct EsimLabels<'a> {
    store: &'a Engine,
    seen: HashMap<EsimId, String>,
}

impl<'a> EsimLabels<'a> {
    pub fn new(store: &'a Engine) -> Self {
        EsimLabels {
            store,
            seen: HashMap::new(),
        }
    }

    fn label(&mut self, esim: EsimId) -> Result<String, StoreError> {
        if let Some(l) = self.seen.get(&esim) {
            return Ok(l.clone());
        }
        let label = self
            .store
            .esim_state(esim)?
            .and_then(|(_, ids)| ids.esim_tran_no.or(ids.iccid))
            .unwrap_or_else(|| format!("esim-{esim}"));
        self.seen.insert(esim, label.clone());
        Ok(label)
    }

    pub fn row(&mut self, q: &QueuedNotice) -> Result<OutboxRow, StoreError> {
        Ok(OutboxRow {
            id: q.id,
            esim: self.label(q.esim)?,
            recipient: q.recipient.email.clone(),
            template: q.notice.template.clone(),
            level: q.notice.level,
            attempts: q.attempts,
            next_attempt: q.next_attempt,
            waiting_for: q.waiting_for.clone(),
            last_error: q.last_error.clone(),
        })
    }
}

/// `paused`: the operator's pause holds every notice, whatever it waited for before.
pub fn outbox_rows(store: &Engine, paused: bool) -> Result<Vec<OutboxRow>, StoreError> {
    let mut labels = EsimLabels::new(store);
    store
        .outbox()?
        .iter()
        .map(|q| {
            let mut row = labels.row(q)?;
            if paused {
                row.waiting_for = Some(crate::dispatch::PAUSED_BY_OPERATOR.into());
            }
            Ok(row)
        })
        .collect()
}

pub fn parked_rows(
    store: &Engine,
    park_for: std::time::Duration,
) -> Result<Vec<ParkedRow>, StoreError> {
    let park_for = chrono::Duration::from_std(park_for).unwrap_or(chrono::Duration::MAX);
    Ok(store
        .parked()?
        .into_iter()
        .map(|p| {
            let ids = EsimIds {
                esim_tran_no: p.ids.esim_tran_no,
                iccid: p.ids.iccid,
                order_no: p.ids.order_no,
                transaction_id: p.ids.transaction_id,
            };
            ParkedRow {
                esim: ids.clone(),
                ids,
                template: p.parked.notice.template,
                level: p.parked.notice.level,
                parked_at: p.parked.parked_at,
                expires_at: p
                    .parked
                    .parked_at
                    .checked_add_signed(park_for)
                    .unwrap_or(DateTime::<Utc>::MAX_UTC),
            }
        })
        .collect())
}

pub fn dead_rows(store: &Engine) -> Result<Vec<DeadRow>, StoreError> {
    let mut labels = EsimLabels::new(store);
    store
        .dead()?
        .iter()
        .map(|d: &DeadLetter| {
            Ok(DeadRow {
                notice: labels.row(&d.notice)?,
                reason: d.reason.clone(),
                died_at: d.died_at,
            })
        })
        .collect()
}

/// Where a backup into `dir` goes, or why it may not: the path made absolute
/// as the config makes its own paths (relative to the config file's
/// directory, `base`), and the directory created empty so that sled's copy
/// can only fail for reasons of the store. Refused: a path with NUL, a
/// target inside the store, the templates or the mail-out folder (the copy
/// would be copied into itself, reloaded as templates, or sent), a symbolic
/// link, anything but a new or empty directory, and whatever the file
/// system refuses about the target. Each is the operator's to fix, so a 4xx.
pub fn prepare_backup_target(
    dir: &Path,
    base: Option<&Path>,
    config: &crate::config::Config,
) -> Result<PathBuf, String> {
    if dir.as_os_str().is_empty() {
        return Err("the backup directory is empty".into());
    }
    if dir.as_os_str().as_encoded_bytes().contains(&0) {
        return Err("the backup directory contains a NUL character".into());
    }
    let joined = match base {
        Some(b) if dir.is_relative() && !b.as_os_str().is_empty() => b.join(dir),
        _ => dir.to_path_buf(),
    };
    let target = real_path(&joined).map_err(|e| format!("{}: {e}", joined.display()))?;
    let protected = [
        ("the store", &config.store.path),
        ("the templates directory", &config.templates.dir),
        (
            "the mail-out folder (email.file_dir)",
            &config.email.file_dir,
        ),
    ];
    for (what, p) in protected {
        if p.as_os_str().is_empty() {
            continue;
        }
        let Ok(p) = real_path(p) else { continue };
        if target.starts_with(&p) {
            return Err(format!(
                "{} is inside {what} ({}): back up somewhere else",
                target.display(),
                p.display()
            ));
        }
    }
    let shown = target.display();
    match std::fs::symlink_metadata(&target) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(format!("{shown} is a symbolic link: name a real directory"))
        }
        Ok(m) if !m.is_dir() => return Err(format!("{shown} exists and is not a directory")),
        Ok(_) => match std::fs::read_dir(&target).map(|mut e| e.next().is_none()) {
            Ok(true) => {}
            Ok(false) => {
                return Err(format!(
                    "{shown} is not empty: back up into a new or empty directory"
                ))
            }
            Err(e) => return Err(format!("{shown}: {e}")),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(&target).map_err(|e| format!("cannot create {shown}: {e}"))?
        }
        Err(e) => return Err(format!("{shown}: {e}")),
    }
    Ok(target)
}

/// `p` made absolute with `.` and `..` taken out and the symbolic links of
/// its existing part resolved, so that "inside the store" is decided on
/// what the path really names. A last component that is itself a symbolic
/// link is kept as it is, for the caller to refuse.
fn real_path(p: &Path) -> std::io::Result<PathBuf> {
    use std::path::Component;
    let abs = std::path::absolute(p)?;
    let mut clean = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                clean.pop();
            }
            Component::CurDir => {}
            other => clean.push(other),
        }
    }
    // The longest existing ancestor, canonicalized, plus the rest.
    let mut head = clean.clone();
    let mut rest = Vec::new();
    loop {
        let is_link = std::fs::symlink_metadata(&head).is_ok_and(|m| m.file_type().is_symlink());
        if !rest.is_empty() || !is_link {
            if let Ok(real) = head.canonicalize() {
                let mut out = real;
                out.extend(rest.iter().rev());
                return Ok(out);
            }
        }
        match (head.file_name().map(|n| n.to_os_string()), head.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                head = parent.to_path_buf();
            }
            _ => return Ok(clean),
        }
    }
}
