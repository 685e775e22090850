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
pub async fn write_eml(dir: &Path, stem: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    use tokio::io::AsyncWriteExt;
    for n in 1u32.. {
        let name = if n == 1 {
            format!("{stem}.eml")
        } else {
            format!("{stem}-{n}.eml")
        };
        let path = dir.join(name);
        match tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await
        {
            Ok(mut f) => {
                f.write_all(bytes).await?;
                f.flush().await?;
                return Ok(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => continue,
            Err(e) => return Err(e),
        }
    }
    unreachable!("the loop returns")
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
