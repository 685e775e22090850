//! Logs: human-readable by default, JSON when `[log] format = "json"`.
//! Addresses are masked where they are logged (`customers::mask_email`, the
//! one masking function); secrets are never logged (`config::Secret` has a
//! redacted `Debug`). Text that came from outside cannot forge a line: every
//! formatted event passes through [`OneLine`] on its way to stderr.

use std::borrow::Cow;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFormat};

/// Installs the global subscriber once; later calls (tests) are ignored.
/// `RUST_LOG`, when set, wins over `log.level`.
pub fn init(config: Option<&Config>) {
    let level = config.map(|c| c.log.level.as_str()).unwrap_or("info");
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let json = config.is_some_and(|c| c.log.format == LogFormat::Json);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(OneLine { ansi });
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

/// Escapes control characters (newlines, carriage returns, escape
/// sequences…) so that a value from outside stays on its line; `\t` and
/// printable text are kept as they are.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        push_escaped(&mut out, c);
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control() && c != '\t'
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        c if needs_escape(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        c => out.push(c),
    }
}

/// The log writer: tracing-subscriber formats each event into one buffer
/// and writes it with one `write_all`, so escaping every control character
/// but the final newline keeps one event on one line, whatever a field held
/// and whichever call site forgot to escape it. With colours on (a
/// terminal), the formatter's own escape sequences are kept.
#[derive(Clone, Copy)]
pub struct OneLine {
    pub ansi: bool,
}

impl<'a> MakeWriter<'a> for OneLine {
    type Writer = OneLine;
    fn make_writer(&'a self) -> OneLine {
        *self
    }
}

impl Write for OneLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        std::io::stderr().write_all(&one_line(buf, self.ansi))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// One formatted event as one line (see [`OneLine`]).
pub fn one_line(buf: &[u8], ansi: bool) -> Cow<'_, [u8]> {
    let body = buf.strip_suffix(b"\n").unwrap_or(buf);
    let bad = |b: u8| (b < 0x20 && b != b'\t' && !(ansi && b == 0x1b)) || b == 0x7f;
    if !body.iter().any(|&b| bad(b)) {
        return Cow::Borrowed(buf);
    }
    let mut out = Vec::with_capacity(buf.len() + 16);
    for &b in body {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b if bad(b) => out.extend_from_slice(format!("\\u{{{b:x}}}").as_bytes()),
            b => out.push(b),
        }
    }
    out.push(b'\n');
    Cow::Owned(out)
}

/// At most one log line per key per `every`, so a flood of refused requests
/// cannot fill the disk; each line that is written says how many were left
/// out since the previous one.
pub struct Throttle<const N: usize> {
    every: Duration,
    slots: Mutex<[(Option<Instant>, u64); N]>,
}

impl<const N: usize> Throttle<N> {
    pub const fn new(every: Duration) -> Self {
        Throttle {
            every,
            slots: Mutex::new([(None, 0); N]),
        }
    }

    /// `Some(left_out)` when a line for `key` may be written now.
    pub fn allow(&self, key: usize) -> Option<u64> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let (last, left_out) = &mut slots[key % N];
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < self.every) {
            *left_out += 1;
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(left_out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newline_cannot_start_a_line() {
        let line = b"INFO forgot recipient=a***@x.com\n2026 INFO forged\n";
        let out = one_line(line, false);
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        assert!(out.ends_with(b"forged\n"));
        assert_eq!(one_line(b"plain\n", false).as_ref(), b"plain\n");
        assert_eq!(escape("a\r\nb\u{1b}[31m"), "a\\r\\nb\\u{1b}[31m");
    }

    #[test]
    fn throttle_counts_what_it_left_out() {
        let t = Throttle::<2>::new(Duration::from_secs(3600));
        assert_eq!(t.allow(0), Some(0));
        assert_eq!(t.allow(0), None);
        assert_eq!(t.allow(0), None);
        assert_eq!(t.allow(1), Some(0), "each key has its own budget");
        let t = Throttle::<1>::new(Duration::ZERO);
        assert_eq!(t.allow(0), Some(0));
    }
}
