//! The `file` transport: every message becomes one `.eml` file in
//! `email.file_dir`, named so that `ls` answers the questions an operator
//! trying things out has: when, which email, to whom.
//!
//! `20261204T161502.123Z_data_usage_a***@example.com_1f3a9c2e.eml`: the UTC
//! instant to the millisecond (fixed width, so names sort by time), the
//! template, the recipient masked as in the logs ([`mask_email`]), and the
//! start of the Message-ID. lettre's own file transport names files by a
//! random UUID, which says none of this.
//!
//! Names hold only letters, digits and `. _ - + @ *`: no `/`, no `:` (the
//! instant is written without colons), nothing a shell or Linux and macOS
//! file systems treat specially; `*` stays so the masked address reads as
//! in the logs. A name never exceeds 200 bytes (file systems allow 255).

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::customers::mask_email;

const MAX_NAME_BYTES: usize = 200;

/// The file name of one message, without the directory and the `.eml` (a
/// counter may come between them, see [`write_eml`]).
pub fn eml_stem(at: DateTime<Utc>, template: &str, to: &str, message_id: &str) -> String {
    let when = at.format("%Y%m%dT%H%M%S%.3fZ").to_string();
    let id: String = message_id
        .trim_start_matches('<')
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .take(8)
        .collect();
    let template = safe(template, 60);
    let budget = MAX_NAME_BYTES - when.len() - template.len() - id.len() - 3 - 8;
    let whom = safe(&mask_email(to), budget);
    format!("{when}_{template}_{whom}_{id}")
}

/// `s` with every character outside the safe set replaced by `_`, cut at a
/// character boundary to at most `max` bytes.
fn safe(s: &str, max: usize) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let c = if c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '+' | '@' | '*') {
            c
        } else {
            '_'
        };
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

/// Writes `bytes` as `dir/<stem>.eml`, never over an existing file (a second
/// message with the same name in the same millisecond gets `-2`, `-3`, …).
///
/// The message is written whole to a hidden `.tmp` file first and then
/// linked under its name, so whoever watches the folder (a test, a script
/// that picks messages up) never reads half a message; the link, like
/// `create_new`, fails instead of replacing a file of the same name.
pub async fn write_eml(dir: &Path, stem: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::io::AsyncWriteExt;
    // Unique among this process's writes, whatever the stems.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let temp = dir.join(format!(".{stem}.{}-{n}.tmp", std::process::id()));
    let mut f = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)
        .await?;
    f.write_all(bytes).await?;
    f.flush().await?;
    drop(f);
    let linked = link_free_name(dir, stem, &temp).await;
    let _ = tokio::fs::remove_file(&temp).await;
    linked
}

/// Links `temp` as `dir/<stem>.eml`, or the first `-N` name not taken.
async fn link_free_name(dir: &Path, stem: &str, temp: &Path) -> std::io::Result<PathBuf> {
    for n in 1u32..=1000 {
        let name = if n == 1 {
            format!("{stem}.eml")
        } else {
            format!("{stem}-{n}.eml")
        };
        let path = dir.join(name);
        match tokio::fs::hard_link(temp, &path).await {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        format!("1000 messages named {stem} in this folder already"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn names_say_when_what_and_whom_and_are_safe() {
        let at = Utc.with_ymd_and_hms(2026, 12, 4, 16, 15, 2).unwrap()
            + chrono::Duration::milliseconds(123);
        let name = eml_stem(
            at,
            "data_usage",
            "ana.lopez@example.com",
            "<1f3a9c2e77aa@example.com>",
        );
        assert_eq!(
            name,
            "20261204T161502.123Z_data_usage_a***@example.com_1f3a9c2e"
        );
        let odd = eml_stem(at, "../x:y", "\"a/b\"@example.com", "<>");
        assert!(!odd.contains(['/', ':', '"', '\\']), "{odd}");
        let long = eml_stem(
            at,
            &"t".repeat(300),
            &format!("a@{}.com", "d".repeat(300)),
            "<ab>",
        );
        assert!(long.len() <= MAX_NAME_BYTES, "{}", long.len());
    }
}
