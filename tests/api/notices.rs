//! SPEC §6, one test per sentence, over a real sled store in a temp dir:
//! events go through `Store::ingest` (resolution, policy, recipient lookup,
//! queue/park/suppress in one transaction) exactly as the webhook sends them.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use esim_notify::customers::{IdKind, Recipient};
use esim_notify::engine::{Ages, Engine, IngestOutcome, LogKind, SuppressReason};
use esim_notify::event::{Event, Identifiers};
use esim_notify::policy::Rules;
use serde_json::{json, Value};

const PARK_FOR: Duration = Duration::from_secs(72 * 3600);

struct Harness {
    _dir: tempfile::TempDir,
    store: Engine,
    rules: Rules,
    now: DateTime<Utc>,
    n: u32,
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let store =
            crate::helpers::open_engine(&dir.path().join("data"), Duration::from_secs(7 * 86400))
                .unwrap();
        Harness {
            _dir: dir,
            store,
            rules: Rules::default(),
            now: Utc.with_ymd_and_hms(2026, 4, 22, 12, 0, 0).unwrap(),
            n: 0,
        }
    }

    /// Posts one event for eSIM `tran` (iccid `I-<tran>`, orderNo `O-<tran>`
    /// unless `content` says otherwise) with a fresh notifyId.
    fn post(&mut self, tran: &str, notify_type: &str, content: Value) -> IngestOutcome {
        self.n += 1;
        let mut c = json!({"esimTranNo": tran, "iccid": format!("I-{tran}"), "orderNo": format!("O-{tran}")});
        for (k, v) in content.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        let body =
            json!({"notifyType": notify_type, "notifyId": format!("n{}", self.n), "content": c});
        self.post_body(&body)
    }

    fn post_body(&mut self, body: &Value) -> IngestOutcome {
        let event = Event::from_value(body).unwrap();
        self.now += chrono::Duration::seconds(1);
        self.store
            .ingest(&event, body, &self.rules, self.now)
            .unwrap()
    }

    fn bind(&mut self, email: &str, kind: IdKind, value: &str) -> esim_notify::engine::BindReport {
        let mut ids = Identifiers::default();
        match kind {
            IdKind::EsimTranNo => ids.esim_tran_no = Some(value.into()),
            IdKind::Iccid => ids.iccid = Some(value.into()),
            IdKind::OrderNo => ids.order_no = Some(value.into()),
            IdKind::TransactionId => ids.transaction_id = Some(value.into()),
        }
        let r = Recipient {
            email: email.into(),
            name: Some("Ana".into()),
            locale: None,
            timezone: None,
        };
        self.store.bind(&r, &ids, PARK_FOR, self.now).unwrap()
    }

    /// Queued notices of one eSIM as (template, level), oldest first.
    fn queued(&self, tran: &str) -> Vec<(String, Option<f64>)> {
        let esim = self
            .store
            .esim_view(Some(IdKind::EsimTranNo), tran)
            .unwrap()
            .map(|v| v.id);
        self.store
            .outbox()
            .unwrap()
            .into_iter()
            .filter(|q| Some(q.esim) == esim)
            .map(|q| (q.notice.template, q.notice.level))
            .collect()
    }

    /// The decision log of one eSIM, without event lines.
    fn decisions(&self, tran: &str) -> Vec<(LogKind, String)> {
        self.store
            .esim_view(Some(IdKind::EsimTranNo), tran)
            .unwrap()
            .map(|v| {
                v.decisions
                    .into_iter()
                    .filter(|d| !matches!(d.what, LogKind::Event | LogKind::Note))
                    .map(|d| (d.what, d.detail))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn data(total: u64, remain: u64) -> Value {
    json!({"totalVolume": total, "orderUsage": total - remain, "remain": remain})
}

fn status(s: &str) -> Value {
    json!({"esimStatus": s, "smdpStatus": "ENABLED"})
}

fn t(name: &str, level: Option<f64>) -> (String, Option<f64>) {
    (name.to_string(), level)
}

fn bound() -> Harness {
    let mut h = Harness::new();
    h.bind("ana@example.com", IdKind::EsimTranNo, "T1");
    h
}

#[test]
fn fraction_is_remain_over_total_volume_when_both_present() {
    let mut h = bound();
    // remainThreshold says 0.5 but the figures say 9 % left: the figures win.
    let mut c = data(100, 9);
    c["remainThreshold"] = json!(0.5);
    h.post("T1", "DATA_USAGE", c);
    assert_eq!(h.queued("T1"), vec![t("data_usage", Some(0.1))]);
}

#[test]
fn fraction_falls_back_to_remain_threshold() {
    let mut h = bound();
    h.post(
        "T1",
        "DATA_USAGE",
        json!({"remainThreshold": "0.2", "totalVolume": 100}),
    );
    assert_eq!(h.queued("T1"), vec![t("data_usage", Some(0.2))]);
}

#[test]
fn level_is_the_smallest_threshold_at_or_above_the_fraction() {
    let mut h = bound();
    h.post("T1", "DATA_USAGE", data(100, 60)); // above every threshold
    h.post("T1", "DATA_USAGE", data(100, 50)); // exactly 0.5
    h.post("T1", "DATA_USAGE", data(100, 15)); // 0.15 -> 0.2
    assert_eq!(
        h.queued("T1"),
        vec![t("data_usage", Some(0.5)), t("data_usage", Some(0.2))]
    );
}

#[test]
fn fifty_twenty_ten_gives_three() {
    let mut h = bound();
    for remain in [50, 20, 10] {
        h.post("T1", "DATA_USAGE", data(1000, remain * 10));
    }
    assert_eq!(
        h.queued("T1"),
        vec![
            t("data_usage", Some(0.5)),
            t("data_usage", Some(0.2)),
            t("data_usage", Some(0.1))
        ]
    );
}

#[test]
fn ten_then_twenty_gives_one() {
    let mut h = bound();
    h.post("T1", "DATA_USAGE", data(100, 10));
    h.post("T1", "DATA_USAGE", data(100, 20));
    assert_eq!(h.queued("T1"), vec![t("data_usage", Some(0.1))]);
}

#[test]
fn a_top_up_rearms_and_a_late_pre_top_up_event_does_not() {
    let mut h = bound();
    h.post("T1", "DATA_USAGE", data(100, 10));
    h.post("T1", "DATA_USAGE", data(200, 20)); // top-up: new cycle, 10 % again
    h.post("T1", "DATA_USAGE", data(100, 5)); // late report from the old cycle
    assert_eq!(
        h.queued("T1"),
        vec![t("data_usage", Some(0.1)), t("data_usage", Some(0.1))]
    );
}

#[test]
fn in_use_after_used_up_opens_a_new_cycle() {
    let mut h = bound();
    h.post("T1", "ESIM_STATUS", status("IN_USE"));
    h.post("T1", "DATA_USAGE", data(100, 10));
    h.post("T1", "ESIM_STATUS", status("USED_UP"));
    h.post("T1", "ESIM_STATUS", status("IN_USE"));
    h.post("T1", "DATA_USAGE", data(300, 30));
    assert_eq!(
        h.queued("T1"),
        vec![
            t("esim_activated", None),
            t("data_usage", Some(0.1)),
            t("esim_used_up", None),
            t("data_usage", Some(0.1)),
        ]
    );
}

#[test]
fn used_up_then_a_late_ten_percent_gives_only_used_up() {
    let mut h = bound();
    h.post("T1", "ESIM_STATUS", status("USED_UP"));
    h.post("T1", "ESIM_STATUS", status("USED_UP"));
    h.post("T1", "DATA_USAGE", data(100, 10));
    assert_eq!(h.queued("T1"), vec![t("esim_used_up", None)]);
}

#[test]
fn validity_once_per_expiry_and_an_extension_rearms() {
    let mut h = bound();
    let v = |exp: &str| json!({"remain": 1, "totalDuration": 30, "durationUnit": "DAY", "expiredTime": exp});
    h.post("T1", "VALIDITY_USAGE", v("2026-04-23T17:13:19Z"));
    h.post("T1", "VALIDITY_USAGE", v("2026-04-23T17:13:19+0000")); // same instant
    h.post("T1", "VALIDITY_USAGE", v("2026-05-23T17:13:19Z")); // extended
    assert_eq!(
        h.queued("T1"),
        vec![t("validity_usage", None), t("validity_usage", None)]
    );
}

#[test]
fn statuses_once_per_template_and_both_expired_are_one_email() {
    let mut h = bound();
    h.post("T1", "ESIM_STATUS", status("IN_USE"));
    h.post("T1", "ESIM_STATUS", status("IN_USE"));
    h.post("T1", "ESIM_STATUS", status("USED_EXPIRED"));
    h.post("T1", "ESIM_STATUS", status("UNUSED_EXPIRED"));
    h.post("T1", "ESIM_STATUS", status("SUSPENDED")); // not mapped
    assert_eq!(
        h.queued("T1"),
        vec![t("esim_activated", None), t("esim_expired", None)]
    );
}

#[test]
fn terminal_statuses_stop_data_validity_and_used_up() {
    let mut h = bound();
    h.post("T1", "ESIM_STATUS", status("CANCEL"));
    h.post(
        "T1",
        "VALIDITY_USAGE",
        json!({"remain": 1, "durationUnit": "DAY", "expiredTime": "2026-04-23T17:13:19Z"}),
    );
    h.post("T1", "DATA_USAGE", data(100, 10));
    h.post("T1", "ESIM_STATUS", status("USED_UP"));
    assert_eq!(h.queued("T1"), vec![t("esim_cancelled", None)]);
}

#[test]
fn order_status_without_the_provider_api_sends_nothing() {
    let mut h = Harness::new();
    h.bind("ana@example.com", IdKind::OrderNo, "B1");
    h.post_body(&json!({"notifyType":"ORDER_STATUS","notifyId":"o1","content":{"orderNo":"B1","orderStatus":"GOT_RESOURCE","transactionId":"x"}}));
    assert!(h.store.outbox().unwrap().is_empty());
}

#[test]
fn smdp_event_sends_nothing_but_updates_the_esim() {
    let mut h = bound();
    h.post(
        "T1",
        "SMDP_EVENT",
        json!({"esimStatus": "GOT_RESOURCE", "smdpStatus": "DOWNLOAD", "eid": "E1"}),
    );
    assert!(h.queued("T1").is_empty());
    let v = h
        .store
        .esim_view(Some(IdKind::EsimTranNo), "T1")
        .unwrap()
        .unwrap();
    assert_eq!(v.state.smdp_status.as_deref(), Some("DOWNLOAD"));
    assert_eq!(v.state.eid.as_deref(), Some("E1"));
}

#[test]
fn the_same_delivery_twice_changes_nothing() {
    let mut h = bound();
    let body = json!({"notifyType":"DATA_USAGE","notifyId":"same","content":{"esimTranNo":"T1","totalVolume":100,"remain":10}});
    assert!(matches!(h.post_body(&body), IngestOutcome::Accepted { .. }));
    let before = h.store.esim_view(None, "T1").unwrap().unwrap();
    assert_eq!(h.post_body(&body), IngestOutcome::Duplicate);
    let after = h.store.esim_view(None, "T1").unwrap().unwrap();
    assert_eq!(before.decisions, after.decisions);
    assert_eq!(h.queued("T1").len(), 1);
}

#[test]
fn recipient_lookup_order_esim_tran_no_first() {
    let mut h = Harness::new();
    h.bind("by-order@example.com", IdKind::OrderNo, "O-T1");
    h.bind("by-tran@example.com", IdKind::EsimTranNo, "T1");
    h.post("T1", "DATA_USAGE", data(100, 10));
    let q = h.store.outbox().unwrap();
    assert_eq!(q[0].recipient.email, "by-tran@example.com");

    let mut h = Harness::new();
    h.bind("by-tx@example.com", IdKind::TransactionId, "TX9");
    h.bind("by-order@example.com", IdKind::OrderNo, "O-T1");
    h.post(
        "T1",
        "DATA_USAGE",
        json!({"totalVolume": 100, "remain": 10, "transactionId": "TX9"}),
    );
    assert_eq!(
        h.store.outbox().unwrap()[0].recipient.email,
        "by-order@example.com"
    );
}

#[test]
fn unknown_esim_parks_and_one_binding_releases_only_the_most_severe() {
    let mut h = Harness::new();
    for remain in [50, 20, 10] {
        h.post("T1", "DATA_USAGE", data(100, remain));
    }
    assert!(h.store.outbox().unwrap().is_empty());
    assert_eq!(h.store.counts().parked, 3);
    let report = h.bind("ana@example.com", IdKind::Iccid, "I-T1");
    assert_eq!(report.released.len(), 1);
    assert_eq!(report.superseded, 2);
    assert_eq!(h.queued("T1"), vec![t("data_usage", Some(0.1))]);
    assert_eq!(h.store.counts().parked, 0);
    let kinds: Vec<LogKind> = h.decisions("T1").into_iter().map(|d| d.0).collect();
    let count = |k: LogKind| kinds.iter().filter(|x| **x == k).count();
    assert_eq!(
        (
            count(LogKind::Parked),
            count(LogKind::Released),
            count(LogKind::Superseded)
        ),
        (3, 1, 2),
        "{kinds:?}"
    );
    let released = h
        .decisions("T1")
        .into_iter()
        .find(|d| d.0 == LogKind::Released)
        .unwrap();
    assert!(released.1.contains("/0.1/"), "{}", released.1);
}

#[test]
fn parked_notices_expire_after_park_for() {
    let mut h = Harness::new();
    h.post("T1", "DATA_USAGE", data(100, 10));
    h.now += chrono::Duration::hours(73);
    let report = h.bind("ana@example.com", IdKind::EsimTranNo, "T1");
    assert!(report.released.is_empty());
    assert!(h.decisions("T1").iter().any(|d| d.0 == LogKind::Expired));
}

#[test]
fn a_suppressed_address_gets_nothing_and_the_decision_is_recorded() {
    let mut h = bound();
    h.store
        .suppress("ANA@example.com", SuppressReason::Operator, None, h.now)
        .unwrap();
    h.post("T1", "DATA_USAGE", data(100, 10));
    assert!(h.queued("T1").is_empty());
    assert!(h.decisions("T1").iter().any(|d| d.0 == LogKind::Suppressed));
}

#[test]
fn a_recipient_bound_by_iccid_does_not_follow_a_recycled_iccid() {
    let mut h = Harness::new();
    h.post(
        "OLD",
        "ESIM_STATUS",
        json!({"iccid": "8900001", "esimStatus": "IN_USE"}),
    );
    h.bind("old-owner@example.com", IdKind::Iccid, "8900001");
    h.post(
        "NEW",
        "DATA_USAGE",
        json!({"iccid": "8900001", "totalVolume": 100, "remain": 10}),
    );
    assert!(
        h.queued("NEW").is_empty(),
        "the old customer must not hear about the new eSIM"
    );
    assert_eq!(h.store.counts().parked, 1);
    // Binding the ICCID again, now that it names the new eSIM, releases it.
    let report = h.bind("new-owner@example.com", IdKind::Iccid, "8900001");
    assert_eq!(report.released.len(), 1);
    assert_eq!(report.released[0].recipient.email, "new-owner@example.com");
}

#[test]
fn an_iccid_binding_made_before_any_event_belongs_to_the_first_esim() {
    let mut h = Harness::new();
    h.bind("first@example.com", IdKind::Iccid, "8900002");
    h.post(
        "A",
        "DATA_USAGE",
        json!({"iccid": "8900002", "totalVolume": 100, "remain": 10}),
    );
    assert_eq!(h.queued("A").len(), 1);
    h.post(
        "B",
        "DATA_USAGE",
        json!({"iccid": "8900002", "totalVolume": 100, "remain": 10}),
    );
    assert!(h.queued("B").is_empty());
}

#[test]
fn an_esim_known_by_order_adopts_its_esim_tran_no() {
    let mut h = Harness::new();
    h.post_body(&json!({"notifyType":"ORDER_STATUS","notifyId":"o1","content":{"orderNo":"B7","orderStatus":"GOT_RESOURCE","transactionId":"TX7"}}));
    h.post(
        "T7",
        "ESIM_STATUS",
        json!({"orderNo": "B7", "transactionId": "TX7", "esimStatus": "IN_USE"}),
    );
    let by_order = h
        .store
        .esim_view(Some(IdKind::OrderNo), "B7")
        .unwrap()
        .unwrap();
    let by_tran = h
        .store
        .esim_view(Some(IdKind::EsimTranNo), "T7")
        .unwrap()
        .unwrap();
    assert_eq!(by_order.id, by_tran.id);
}

/// Sixteen deliveries of the same fact at once (distinct notifyIds, as the
/// provider's retries of a slow answer would be) queue one email.
#[test]
fn sixteen_concurrent_deliveries_queue_one_notice() {
    let h = bound();
    let store = &h.store;
    let rules = &h.rules;
    std::thread::scope(|s| {
        for i in 0..16 {
            s.spawn(move || {
                let body = json!({"notifyType":"DATA_USAGE","notifyId": format!("c{i}"),
                    "content":{"esimTranNo":"T1","totalVolume":100,"remain":10}});
                let e = Event::from_value(&body).unwrap();
                store.ingest(&e, &body, rules, Utc::now()).unwrap();
            });
        }
    });
    assert_eq!(h.queued("T1"), vec![t("data_usage", Some(0.1))]);
    assert_eq!(h.store.counts().outbox, 1);
}

/// Retention (SPEC §9): notifyIds after `delivery_dedup`; events, idle
/// eSIMs and their logs after `history`; parked notices after `park_for`.
/// An eSIM with a queued notice is kept whatever its age.
#[test]
fn retention_removes_what_has_aged_out_and_keeps_the_queue() {
    let mut h = Harness::new();
    h.bind("ana@example.com", IdKind::EsimTranNo, "KEEP");
    h.post("KEEP", "DATA_USAGE", data(100, 10)); // queued: must survive
    h.post("IDLE", "ESIM_STATUS", status("SUSPENDED")); // nothing queued, no customer
    h.post("PARK", "DATA_USAGE", data(100, 10)); // parked
    let day = Duration::from_secs(86400);
    let ages = Ages {
        delivery_dedup: day,
        history: 30 * day,
        park_for: PARK_FOR,
    };

    // After park_for: the parked notice expires, nothing else goes.
    let r = h
        .store
        .retain(h.now + chrono::Duration::hours(73), &ages)
        .unwrap();
    assert_eq!((r.parked_expired, r.esims_removed), (1, 0), "{r:?}");
    assert_eq!(
        r.dedup_removed, 3,
        "notifyIds older than delivery_dedup: {r:?}"
    );
    assert_eq!(h.store.counts().parked, 0);

    // After history: idle eSIMs and old events go; the one with a queued notice stays.
    let later = h.now + chrono::Duration::days(31);
    let r = h.store.retain(later, &ages).unwrap();
    assert_eq!(r.events_removed, 3, "{r:?}");
    assert_eq!(r.esims_removed, 2, "{r:?}");
    assert!(h.store.esim_view(None, "IDLE").unwrap().is_none());
    assert!(h.store.esim_view(None, "PARK").unwrap().is_none());
    assert!(h.store.esim_view(None, "KEEP").unwrap().is_some());
    assert_eq!(h.store.outbox().unwrap().len(), 1);

    // A notifyId forgotten by retention is accepted again (and decided by policy, which remembers).
    let body = json!({"notifyType":"DATA_USAGE","notifyId":"n1","content":{"esimTranNo":"KEEP","totalVolume":100,"remain":10}});
    h.now = later;
    assert!(matches!(h.post_body(&body), IngestOutcome::Accepted { .. }));
    assert_eq!(
        h.store.outbox().unwrap().len(),
        1,
        "policy still knows 10 % was queued"
    );
}

/// Ids (queue entries, log lines, eSIMs) are reserved on disk a block at a
/// time; a reopened store must never hand out an id already used.
#[test]
fn ids_never_repeat_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    let rules = Rules::default();
    let open = || crate::helpers::open_engine(&path, Duration::from_secs(86400)).unwrap();
    let post = |store: &Engine, tran: &str, n: usize| {
        let body = json!({"notifyType":"DATA_USAGE","notifyId": format!("{tran}-{n}"),
            "content":{"esimTranNo": tran, "totalVolume": 100, "remain": 10}});
        store
            .ingest(
                &Event::from_value(&body).unwrap(),
                &body,
                &rules,
                Utc::now(),
            )
            .unwrap();
    };
    let first_ids = {
        let store = open();
        post(&store, "A", 1);
        store.flush().unwrap();
        let v = store.esim_view(None, "A").unwrap().unwrap();
        (v.id, v.decisions.len())
    };
    let store = open();
    for n in 0..20 {
        post(&store, &format!("B{n}"), n);
    }
    let a = store.esim_view(None, "A").unwrap().unwrap();
    assert_eq!(
        (a.id, a.decisions.len()),
        first_ids,
        "eSIM A's records were not overwritten"
    );
    let b = store.esim_view(None, "B0").unwrap().unwrap();
    assert!(b.id > a.id);
    assert_eq!(
        store.outbox().unwrap().len(),
        0,
        "no customer bound: all parked"
    );
    assert_eq!(store.counts().parked, 21);
}
