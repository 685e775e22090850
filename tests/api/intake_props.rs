//! Property tests: whatever a sender posts, the parser does not panic and
//! the handler answers 2xx or 4xx, never 5xx — over real HTTP, into a real
//! store, with the real policy behind it.


use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, TestRunner};
use serde_json::{json, Map, Value};

use esim_notify::event::Event;

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null)),
        ".{0,12}".prop_map(Value::String),
        "[0-9]{1,22}".prop_map(Value::String),
        "20[0-9]{2}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9](Z|\\+0000|\\+00:00|)"
            .prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Envelopes close to the real ones: known types and field names, wild values.
fn arb_envelope() -> impl Strategy<Value = Value> {
    let types = prop_oneof![
        Just("DATA_USAGE"),
        Just("VALIDITY_USAGE"),
        Just("ESIM_STATUS"),
        Just("SMDP_EVENT"),
        Just("ORDER_STATUS"),
        Just("CHECK_HEALTH"),
        Just("WHATEVER"),
    ];
    let fields = prop::sample::select(vec![
        "iccid",
        "esimTranNo",
        "orderNo",
        "transactionId",
        "totalVolume",
        "orderUsage",
        "remain",
        "remainThreshold",
        "lastUpdateTime",
        "expiredTime",
        "totalDuration",
        "durationUnit",
        "esimStatus",
        "smdpStatus",
        "orderStatus",
        "eid",
        "remainVolume",
    ]);
    let statuses = prop::sample::select(vec![
        "IN_USE",
        "USED_UP",
        "USED_EXPIRED",
        "UNUSED_EXPIRED",
        "CANCEL",
        "REVOKED",
        "GOT_RESOURCE",
    ]);
    (
        types,
        prop::collection::vec(
            (
                fields,
                prop_oneof![arb_json(), statuses.prop_map(|s| json!(s))],
            ),
            0..10,
        ),
        prop::option::of(arb_json()),
        prop::option::of(arb_json()),
        // A few eSIM keys so that events meet earlier state.
        0u8..4,
    )
        .prop_map(|(t, fields, notify_id, time, esim)| {
            let mut content = Map::new();
            content.insert("esimTranNo".into(), json!(format!("PROP{esim}")));
            for (k, v) in fields {
                content.insert(k.to_string(), v);
            }
            let mut env = Map::new();
            env.insert("notifyType".into(), json!(t));
            env.insert("content".into(), Value::Object(content));
            if let Some(id) = notify_id {
                env.insert("notifyId".into(), id);
            }
            if let Some(t) = time {
                env.insert("eventGenerateTime".into(), t);
            }
            Value::Object(env)
        })
}

proptest! {
    #![proptest_config(PropConfig { cases: 512, ..PropConfig::default() })]

    #[test]
    fn parser_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = Event::parse(&bytes);
    }

    #[test]
    fn parser_never_panics_on_json(v in arb_json()) {
        let _ = Event::from_value(&v);
    }

    #[test]
    fn parser_reads_envelopes(v in arb_envelope()) {
        prop_assert!(Event::from_value(&v).is_ok());
    }
}

#[test]
fn handler_never_answers_5xx() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let app = rt.block_on(crate::helpers::spawn_app(""));
    let http = reqwest::Client::new();
    let url = app.webhook_url();
    let post = |body: Vec<u8>| -> u16 {
        rt.block_on(async {
            http.post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("the server answers")
                .status()
                .as_u16()
        })
    };
    let mut runner = TestRunner::new(PropConfig {
        cases: 256,
        ..PropConfig::default()
    });
    runner
        .run(&arb_envelope(), |v| {
            let status = post(serde_json::to_vec(&v).unwrap());
            prop_assert!(status == 200 || status == 400, "{status} for {v}");
            Ok(())
        })
        .unwrap();
    runner
        .run(&arb_json(), |v| {
            let status = post(serde_json::to_vec(&v).unwrap());
            prop_assert!((200..500).contains(&status), "{status} for {v}");
            Ok(())
        })
        .unwrap();
    runner
        .run(&prop::collection::vec(any::<u8>(), 0..512), |bytes| {
            let status = post(bytes);
            prop_assert!((200..500).contains(&status), "{status}");
            Ok(())
        })
        .unwrap();
    // The server is still healthy afterwards.
    let ok = rt.block_on(async {
        http.get(format!("http://{}/readyz", app.public))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(ok, 200);
    rt.block_on(app.stop());
}
