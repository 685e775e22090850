//! Quiet hours (SPEC §6): a notice due inside the customer's local window
//! waits until the window ends.
//!
//! The window is wall-clock time in the customer's timezone, so it is
//! computed on local dates and converted back through chrono-tz: a DST
//! change shifts the instant the window ends, never the local time on the
//! customer's clock.

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

/// When the quiet window that contains `now` ends, or None when `now` is
/// outside it. `window` is (start, end) in minutes after local midnight, as
/// `config::parse_quiet_hours` gives it; start > end crosses midnight.
pub fn quiet_until(now: DateTime<Utc>, tz: Tz, window: (u32, u32)) -> Option<DateTime<Utc>> {
    let (start, end) = window;
    let local = now.with_timezone(&tz);
    let minute = local.hour() * 60 + local.minute();
    let inside = if start < end {
        minute >= start && minute < end
    } else {
        minute >= start || minute < end
    };
    if !inside {
        return None;
    }
    let mut date = local.date_naive();
    if start > end && minute >= start {
        date = date.succ_opt()?;
    }
    let end_naive = date.and_hms_opt(end / 60, end % 60, 0)?;
    let until = first_instant_at_or_after(tz, end_naive, now)?;
    // A window can only end after now; anything else would be an artefact
    // of a DST jump, and sending now is then the honest answer.
    (until > now).then_some(until)
}

/// The instant showing `naive` on the customer's clock (or, when a DST gap
/// skips it, the first instant after the gap). On a fall-back night it
/// happens twice: the first occurrence still ahead of `now`.
fn first_instant_at_or_after(
    tz: Tz,
    naive: NaiveDateTime,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let mut t = naive;
    // Gaps are at most a few hours; step by 15 minutes (Lord Howe shifts 30).
    for _ in 0..(4 * 24) {
        match tz.from_local_datetime(&t) {
            LocalResult::Single(x) => return Some(x.with_timezone(&Utc)),
            LocalResult::Ambiguous(a, b) => {
                let (a, b) = (a.with_timezone(&Utc), b.with_timezone(&Utc));
                let (first, second) = (a.min(b), a.max(b));
                return Some(if first > now { first } else { second });
            }
            LocalResult::None => t += Duration::minutes(15),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }
    const NIGHT: (u32, u32) = (21 * 60, 8 * 60);

    #[test]
    fn across_midnight_before_and_after_it() {
        let tz: Tz = "UTC".parse().unwrap();
        assert_eq!(
            quiet_until(utc("2025-06-10T22:30:00Z"), tz, NIGHT),
            Some(utc("2025-06-11T08:00:00Z"))
        );
        assert_eq!(
            quiet_until(utc("2025-06-11T03:00:00Z"), tz, NIGHT),
            Some(utc("2025-06-11T08:00:00Z"))
        );
        assert_eq!(
            quiet_until(utc("2025-06-10T21:00:00Z"), tz, NIGHT),
            Some(utc("2025-06-11T08:00:00Z")),
            "the start is inside"
        );
        assert_eq!(
            quiet_until(utc("2025-06-11T08:00:00Z"), tz, NIGHT),
            None,
            "the end is outside"
        );
        assert_eq!(quiet_until(utc("2025-06-11T12:00:00Z"), tz, NIGHT), None);
    }

    #[test]
    fn window_within_one_day() {
        let tz: Tz = "UTC".parse().unwrap();
        let lunch = (12 * 60, 13 * 60 + 30);
        assert_eq!(
            quiet_until(utc("2025-06-10T12:10:00Z"), tz, lunch),
            Some(utc("2025-06-10T13:30:00Z"))
        );
        assert_eq!(quiet_until(utc("2025-06-10T11:59:00Z"), tz, lunch), None);
        assert_eq!(quiet_until(utc("2025-06-10T23:00:00Z"), tz, lunch), None);
    }

    #[test]
    fn in_the_customers_timezone() {
        // 20:30 UTC is 22:30 in Madrid (CEST): quiet until 08:00 local = 06:00 UTC.
        let madrid: Tz = "Europe/Madrid".parse().unwrap();
        assert_eq!(
            quiet_until(utc("2025-06-10T20:30:00Z"), madrid, NIGHT),
            Some(utc("2025-06-11T06:00:00Z"))
        );
        // 20:30 UTC is 16:30 in New York: not quiet.
        let ny: Tz = "America/New_York".parse().unwrap();
        assert_eq!(quiet_until(utc("2025-06-10T20:30:00Z"), ny, NIGHT), None);
    }

    #[test]
    fn the_night_the_clocks_go_forward() {
        // Madrid, 2025-03-30: 02:00 CET jumps to 03:00 CEST. 22:00 local on the
        // 29th (CET, UTC+1) waits until 08:00 CEST (UTC+2) = 06:00 UTC.
        let madrid: Tz = "Europe/Madrid".parse().unwrap();
        assert_eq!(
            quiet_until(utc("2025-03-29T21:00:00Z"), madrid, NIGHT),
            Some(utc("2025-03-30T06:00:00Z"))
        );
        // A window ending at 02:30, which does not exist that night: ends at 03:00 CEST.
        assert_eq!(
            quiet_until(utc("2025-03-29T21:00:00Z"), madrid, (21 * 60, 2 * 60 + 30)),
            Some(utc("2025-03-30T01:00:00Z"))
        );
    }

    #[test]
    fn the_night_the_clocks_go_back() {
        // Madrid, 2025-10-26: 03:00 CEST goes back to 02:00 CET. 08:00 is CET (UTC+1).
        let madrid: Tz = "Europe/Madrid".parse().unwrap();
        assert_eq!(
            quiet_until(utc("2025-10-25T20:00:00Z"), madrid, NIGHT),
            Some(utc("2025-10-26T07:00:00Z"))
        );
        // 02:30 happens twice; the window ends at the first (CEST, 00:30 UTC).
        assert_eq!(
            quiet_until(utc("2025-10-25T20:00:00Z"), madrid, (21 * 60, 2 * 60 + 30)),
            Some(utc("2025-10-26T00:30:00Z"))
        );
        // During the repeated hour (the second 02:10, CET = 01:10 UTC) the first
        // 02:30 is past: the window ends at the second one (01:30 UTC).
        assert_eq!(
            quiet_until(utc("2025-10-26T01:10:00Z"), madrid, (21 * 60, 2 * 60 + 30)),
            Some(utc("2025-10-26T01:30:00Z"))
        );
    }
}
