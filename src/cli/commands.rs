//! The commands that touch the store, written once against [`Operator`].

use std::path::Path;

use serde::Serialize;

use crate::config::Config;
use crate::customers::{Binding, IdKind};
use crate::engine::Suppression;
use crate::operator_views::{DeadRow, OutboxRow, ParkedRow};

use super::operator::{OpError, Operator};
use super::{
    load, Command, CustomersCommand, DeadCommand, IdArgs, OutboxCommand, SuppressCommand, FAILED,
    OK, USAGE,
};

/// Opens the store (or finds the server holding it), runs one command and
/// makes what it changed durable.
pub fn operate(path: &Path, command: Command) -> u8 {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let runtime = match super::runtime(false) {
        Ok(r) => r,
        Err(code) => return code,
    };
    runtime.block_on(async {
        let op = match Operator::connect(&config) {
            Ok(op) => op,
            Err(e) => {
                eprintln!("{e}");
                return e.code();
            }
        };
        let code = match run(&op, command, path, &config).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("{e}");
                e.code()
            }
        };
        if let Err(e) = op.finish() {
            eprintln!("{e}");
            return FAILED;
        }
        code
    })
}

async fn run(op: &Operator, command: Command, path: &Path, config: &Config) -> Result<u8, OpError> {
    match command {
        Command::Customers(c) => customers(op, c).await,
        Command::Keys(c) => super::keys::run(op, c).await,
        Command::Suppress(c) => suppress(op, c).await,
        Command::Outbox {
            command,
            json,
            parked,
        } => match command {
            None if parked => {
                let rows = op.parked().await?;
                if json {
                    print_json(&rows);
                } else if rows.is_empty() {
                    println!("No parked notices.");
                } else {
                    print_table(&parked_header(), rows.iter().map(parked_cells).collect());
                }
                Ok(OK)
            }
            None => {
                let rows = op.outbox().await?;
                if json {
                    print_json(&rows);
                } else if rows.is_empty() {
                    println!("The outbox is empty.");
                } else {
                    print_table(&outbox_header(), rows.iter().map(outbox_cells).collect());
                }
                Ok(OK)
            }
            Some(OutboxCommand::Cancel { id }) => {
                op.cancel(id).await?;
                println!("Cancelled notice {id}.");
                Ok(OK)
            }
        },
        Command::Dead(DeadCommand::List { json }) => {
            let rows = op.dead().await?;
            if json {
                print_json(&rows);
            } else if rows.is_empty() {
                println!("No dead letters.");
            } else {
                let mut header = outbox_header();
                header.extend(["DIED AT", "REASON"]);
                print_table(&header, rows.iter().map(dead_cells).collect());
            }
            Ok(OK)
        }
        Command::Dead(DeadCommand::Retry { id, all }) => {
            if let (Some(id), false) = (id, all) {
                let lifted = op.retry_dead(id).await?;
                println!("Notice {id} is back in the queue.");
                say_lifted(id, lifted.as_ref());
                return Ok(OK);
            }
            // Every one that can go goes; each refusal is reported, and any
            // refusal makes the command fail.
            let rows = op.dead().await?;
            let mut failed = 0;
            for row in &rows {
                match op.retry_dead(row.notice.id).await {
                    Ok(lifted) => say_lifted(row.notice.id, lifted.as_ref()),
                    Err(e) => {
                        eprintln!("notice {}: {e}", row.notice.id);
                        failed += 1;
                    }
                }
            }
            println!(
                "Requeued {} of {} dead letter(s).",
                rows.len() - failed,
                rows.len()
            );
            Ok(if failed > 0 { FAILED } else { OK })
        }
        Command::Pause => {
            op.set_paused(true).await?;
            println!("Sending is paused; intake goes on and the queue keeps growing.");
            if !op.is_remote() {
                println!("(No server is running: the next `serve` starts paused.)");
            }
            Ok(OK)
        }
        Command::Resume => {
            op.set_paused(false).await?;
            println!("Sending is resumed.");
            Ok(OK)
        }
        Command::Backup { dir } => {
            let written = op.backup(&dir, path.parent(), config).await?;
            println!("Backup written to {}.", written.display());
            Ok(OK)
        }
        Command::Serve
        | Command::Check
        | Command::Render { .. }
        | Command::SendTest { .. }
        | Command::Store(_) => {
            unreachable!("handled before the store is opened")
        }
    }
}

async fn customers(op: &Operator, command: CustomersCommand) -> Result<u8, OpError> {
    match command {
        CustomersCommand::Add {
            email,
            name,
            locale,
            timezone,
            ids,
        } => {
            let binding = binding(email, name, locale, timezone, &ids);
            // Refused before anything is opened remotely, with the reason the
            // admin API would give.
            let (recipient, _) = binding
                .clone()
                .validate()
                .map_err(|e| OpError::Rejected(e.to_string()))?;
            let summary = op.bind(binding).await?;
            let named: Vec<String> = ids
                .given()
                .iter()
                .map(|(k, v)| format!("{} {v}", k.wire_name()))
                .collect();
            println!(
                "Bound {} to {}; {} parked notice(s) released, {} superseded.",
                recipient.email,
                named.join(", "),
                summary.released,
                summary.superseded,
            );
            for line in summary.replaced_lines() {
                println!("Replaced: {line}.");
            }
            Ok(OK)
        }
        CustomersCommand::Import { file } => import(op, &file).await,
        CustomersCommand::Get { ids, json } => {
            let (kind, value) = one_id(&ids)?;
            let r = op.customer(kind, &value).await?;
            if json {
                print_json(&r);
            } else {
                println!("email:    {}", r.email);
                println!("name:     {}", r.name.as_deref().unwrap_or("-"));
                println!("locale:   {}", r.locale.as_deref().unwrap_or("-"));
                println!("timezone: {}", r.timezone.as_deref().unwrap_or("-"));
            }
            Ok(OK)
        }
        CustomersCommand::Remove { ids } => {
            let (kind, value) = one_id(&ids)?;
            op.unbind(kind, &value).await?;
            println!("Removed the binding of {} {value}.", kind.wire_name());
            Ok(OK)
        }
        CustomersCommand::Forget { email } => {
            let r = op.forget(&email).await?;
            if r.bindings == 0 {
                // Nothing to forget is worth saying: the address was likely
                // mistyped. Queued notices and dead letters were still cleared.
                eprintln!(
                    "No customer is bound to {email}: nothing to forget ({} queued notice(s) cancelled, {} dead letter(s) redacted).",
                    r.cancelled, r.redacted
                );
                return Ok(FAILED);
            }
            println!(
                "Forgot {email}: {} binding(s) removed, {} queued notice(s) cancelled, {} dead letter(s) redacted.",
                r.bindings, r.cancelled, r.redacted
            );
            Ok(OK)
        }
    }
}

fn binding(
    email: String,
    name: Option<String>,
    locale: Option<String>,
    timezone: Option<String>,
    ids: &IdArgs,
) -> Binding {
    Binding {
        email,
        name,
        locale,
        timezone,
        iccid: ids.iccid.clone(),
        esim_tran_no: ids.esim_tran_no.clone(),
        order_no: ids.order_no.clone(),
        transaction_id: ids.transaction_id.clone(),
    }
}

fn one_id(ids: &IdArgs) -> Result<(IdKind, String), OpError> {
    match ids.given().as_slice() {
        [(k, v)] if !v.trim().is_empty() => Ok((*k, v.trim().to_string())),
        [(k, _)] => Err(OpError::Rejected(format!("--{} is empty", flag_of(*k)))),
        _ => Err(OpError::Rejected(
            "give exactly one of --iccid, --esim-tran-no, --order-no, --transaction-id".into(),
        )),
    }
}

fn flag_of(kind: IdKind) -> &'static str {
    match kind {
        IdKind::Iccid => "iccid",
        IdKind::EsimTranNo => "esim-tran-no",
        IdKind::OrderNo => "order-no",
        IdKind::TransactionId => "transaction-id",
    }
}

async fn suppress(op: &Operator, command: SuppressCommand) -> Result<u8, OpError> {
    match command {
        SuppressCommand::Add { email, reason } => {
            let s = op.suppress(&email, reason.as_deref()).await?;
            println!("Suppressed {} ({}).", s.email, s.describe());
        }
        SuppressCommand::Remove { email } => {
            op.unsuppress(&email).await?;
            println!("{email} is no longer suppressed.");
        }
        SuppressCommand::List { json } => {
            let list = op.suppressions().await?;
            if json {
                print_json(&list);
            } else if list.is_empty() {
                println!("No suppressed addresses.");
            } else {
                print_table(
                    &["EMAIL", "REASON", "SINCE", "DETAIL"],
                    list.iter()
                        .map(|s| {
                            vec![
                                s.email.clone(),
                                s.reason.to_string(),
                                s.since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                                s.detail.clone().unwrap_or_default(),
                            ]
                        })
                        .collect(),
                );
            }
        }
    }
    Ok(OK)
}

const COLUMNS: [&str; 8] = [
    "email",
    "name",
    "locale",
    "timezone",
    "iccid",
    "esimTranNo",
    "orderNo",
    "transactionId",
];

/// The field separator, from the header line: `,` as SPEC writes it, `;` as
/// spreadsheets in locales with a decimal comma (most of Europe) export "CSV",
/// or a tab; whichever the header holds most of, `,` on a tie. The header names
/// fixed columns, so it holds no quoted separators to miscount.
fn delimiter(text: &[u8]) -> u8 {
    let header = text.split(|b| *b == b'\n').next().unwrap_or_default();
    let count = |d: u8| header.iter().filter(|b| **b == d).count();
    [b';', b'\t']
        .into_iter()
        .filter(|d| count(*d) > count(b','))
        .max_by_key(|d| count(*d))
        .unwrap_or(b',')
}

fn crlf_as_lf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for (i, b) in bytes.iter().enumerate() {
        if !(*b == b'\r' && bytes.get(i + 1) == Some(&b'\n')) {
            out.push(*b);
        }
    }
    out
}

/// Binds every row; a bad row is reported with its line number and the rest
/// go on. A store or server failure stops the import: later rows would fail
/// the same way, and the operator should see one clear error.
async fn import(op: &Operator, file: &Path) -> Result<u8, OpError> {
    let bytes =
        std::fs::read(file).map_err(|e| OpError::Failed(format!("{}: {e}", file.display())))?;
    let bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(&bytes);
    // Windows line ends as LF: the csv crate numbers the lines of a CRLF file
    // one short, and a rejected row must be found by the line it names.
    let bytes = crlf_as_lf(bytes);
    let bytes = bytes.as_slice();
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .delimiter(delimiter(bytes))
        .from_reader(bytes);
    let headers = reader
        .headers()
        .map_err(|e| OpError::Failed(format!("{}: {e}", file.display())))?
        .clone();
    let mut index: Vec<Option<usize>> = vec![None; COLUMNS.len()];
    for (i, h) in headers.iter().enumerate() {
        let h = h.trim_start_matches('\u{feff}');
        match COLUMNS.iter().position(|c| c.eq_ignore_ascii_case(h)) {
            Some(c) if index[c].is_none() => index[c] = Some(i),
            Some(_) => {
                eprintln!("{}: line 1: column `{h}` appears twice", file.display());
                return Ok(USAGE);
            }
            None => {
                eprintln!(
                    "{}: line 1: unknown column `{h}` (expected {})",
                    file.display(),
                    COLUMNS.join(",")
                );
                return Ok(USAGE);
            }
        }
    }
    if index[0].is_none() || index[4..].iter().all(Option::is_none) {
        eprintln!(
            "{}: line 1: the header must name `email` and at least one of iccid, esimTranNo, orderNo, transactionId",
            file.display()
        );
        return Ok(USAGE);
    }
    let (mut imported, mut rejected, mut released) = (0usize, 0usize, 0usize);
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                println!("line {line}: rejected: {e}");
                rejected += 1;
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        if record.len() != headers.len() {
            println!(
                "line {line}: rejected: {} field(s) where the header has {}",
                record.len(),
                headers.len()
            );
            rejected += 1;
            continue;
        }
        let get = |c: usize| index[c].and_then(|i| record.get(i)).map(str::to_string);
        let b = Binding {
            email: get(0).unwrap_or_default(),
            name: get(1),
            locale: get(2),
            timezone: get(3),
            iccid: get(4),
            esim_tran_no: get(5),
            order_no: get(6),
            transaction_id: get(7),
        };
        if let Err(e) = b.clone().validate() {
            println!("line {line}: rejected: {e}");
            rejected += 1;
            continue;
        }
        match op.bind(b).await {
            Ok(s) => {
                imported += 1;
                released += s.released;
                for r in s.replaced_lines() {
                    println!("line {line}: replaced: {r}");
                }
            }
            Err(OpError::Rejected(e)) | Err(OpError::NotFound(e)) => {
                println!("line {line}: rejected: {e}");
                rejected += 1;
            }
            Err(OpError::Failed(e)) => {
                println!("imported {imported}, rejected {rejected} before line {line}");
                return Err(OpError::Failed(format!("stopped at line {line}: {e}")));
            }
        }
    }
    println!("imported {imported}, rejected {rejected}");
    if released > 0 {
        println!("{released} parked notice(s) released");
    }
    Ok(if rejected > 0 { FAILED } else { OK })
}

pub(super) fn print_json<T: Serialize>(v: &T) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("cannot print JSON: {e}"),
    }
}

fn say_lifted(id: u64, lifted: Option<&Suppression>) {
    if let Some(s) = lifted {
        println!(
            "Notice {id}: the suppression of {} its own failure added ({}) is lifted.",
            s.email,
            s.describe()
        );
    }
}

fn parked_header() -> Vec<&'static str> {
    vec![
        "ESIMTRANNO",
        "ICCID",
        "ORDERNO",
        "TRANSACTIONID",
        "TEMPLATE",
        "PARKED AT",
        "EXPIRES AT",
    ]
}

fn parked_cells(r: &ParkedRow) -> Vec<String> {
    let id = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let at =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    vec![
        id(&r.esim.esim_tran_no),
        id(&r.esim.iccid),
        id(&r.esim.order_no),
        id(&r.esim.transaction_id),
        match r.level {
            Some(l) => format!("{} ({}%)", r.template, (l * 100.0).round()),
            None => r.template.clone(),
        },
        at(r.parked_at),
        at(r.expires_at),
    ]
}

fn outbox_header() -> Vec<&'static str> {
    vec![
        "ID",
        "ESIM",
        "RECIPIENT",
        "TEMPLATE",
        "ATTEMPTS",
        "NEXT ATTEMPT",
        "WAITING FOR",
        "LAST ERROR",
    ]
}

fn outbox_cells(r: &OutboxRow) -> Vec<String> {
    vec![
        r.id.to_string(),
        r.esim.clone(),
        r.recipient.clone(),
        match r.level {
            Some(l) => format!("{} ({}%)", r.template, (l * 100.0).round()),
            None => r.template.clone(),
        },
        r.attempts.to_string(),
        r.next_attempt
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        r.waiting_for.clone().unwrap_or_else(|| "-".into()),
        r.last_error.clone().unwrap_or_else(|| "-".into()),
    ]
}

fn dead_cells(r: &DeadRow) -> Vec<String> {
    let mut cells = outbox_cells(&r.notice);
    cells.push(r.died_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    cells.push(r.reason.clone());
    cells
}

pub(super) fn print_table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row);
    }
}
