//! `GET /admin/stats?days=N`: the daily counters (SPEC §4), per day in
//! `templates.default_timezone` and template, for the last N days (today
//! included; 30 when not given; never further back than `store.history`
//! keeps). SPEC leaves the shape open; the answer is a JSON array, oldest
//! day first, one object per day and template that has any count:
//!
//! ```json
//! [{"day":"2026-12-04","template":"data_low","queued":1,"sent":1,"failed":0,
//!   "dead":0,"bounced":0,"complained":0,"suppressed":0}]
//! ```
//!
//! A `days` that is not a whole number from 1 up is `400` with the reason.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, NaiveDate, Utc};

use crate::engine::{DayStats, Engine};
use crate::http::error::ApiError;
use crate::http::state::AppState;

/// Days answered when `days` is not given (the console's chart shows as many).
pub const DEFAULT_DAYS: u32 = 30;

pub async fn stats(app: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let days = days_from_query(req.query_string()).map_err(ApiError::bad_request)?;
    let history = app.config.store.history.0;
    let rows = app
        .on_store(move |s| last_days(s, days, history, Utc::now()))
        .await?;
    Ok(HttpResponse::Ok().json(rows))
}

/// The counters of the last `days` days at `now` (today included), none
/// from before what `history` keeps.
pub fn last_days(
    engine: &Engine,
    days: u32,
    history: std::time::Duration,
    now: DateTime<Utc>,
) -> Result<Vec<DayStats>, crate::store::StoreError> {
    let (from, to) = window(engine, days, history, now);
    engine.daily_stats(from, to)
}

/// The first and last day of the last `days` days at `now`, in the
/// counters' zone, the first no earlier than `history` keeps.
pub fn window(
    engine: &Engine,
    days: u32,
    history: std::time::Duration,
    now: DateTime<Utc>,
) -> (NaiveDate, NaiveDate) {
    let today = now.with_timezone(&engine.stats_zone()).date_naive();
    let back = today
        .checked_sub_days(chrono::Days::new(u64::from(days.max(1) - 1)))
        .unwrap_or(NaiveDate::MIN);
    (back.max(engine.first_kept_day(now, history)), today)
}

/// `days` from the query string: absent is [`DEFAULT_DAYS`]; anything but
/// a whole number from 1 up is refused with the reason. Other parameters
/// are refused too, so a typo is not silently the default.
fn days_from_query(query: &str) -> Result<u32, String> {
    let pairs = web::Query::<Vec<(String, String)>>::from_query(query)
        .map_err(|e| format!("unreadable query string: {e}"))?
        .into_inner();
    let mut days = None;
    for (k, v) in pairs {
        if k != "days" {
            return Err(format!("unknown parameter `{k}`: only `days` is read"));
        }
        if days.is_some() {
            return Err("give `days` once".into());
        }
        let n: u64 = v
            .trim()
            .parse()
            .map_err(|_| format!("`days` must be a whole number of days, 1 or more, not `{v}`"))?;
        if n == 0 {
            return Err("`days` must be 1 or more".into());
        }
        // More than history keeps is answered as all it keeps.
        days = Some(u32::try_from(n).unwrap_or(u32::MAX));
    }
    Ok(days.unwrap_or(DEFAULT_DAYS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_is_a_whole_number_from_one_up() {
        assert_eq!(days_from_query(""), Ok(30));
        assert_eq!(days_from_query("days=7"), Ok(7));
        assert_eq!(days_from_query("days=99999999999"), Ok(u32::MAX));
        for bad in [
            "days=0",
            "days=-1",
            "days=abc",
            "days=1.5",
            "days=",
            "day=3",
            "days=1&days=2",
        ] {
            let e = days_from_query(bad).unwrap_err();
            assert!(e.contains("days") || e.contains("day"), "{bad}: {e}");
        }
    }
}
