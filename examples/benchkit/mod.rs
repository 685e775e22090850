//! Shared by the benchmark examples (`paced`, `seed`, `load`): the one place
//! that decides what the n-th synthetic eSIM and webhook look like, so that
//! customers bound by `seed` are exactly the eSIMs `paced` posts about.
//! (Not an example of its own: cargo only builds `examples/*.rs`.)
#![allow(dead_code)]

/// The n-th eSIM's esimTranNo in a run named `prefix`.
pub fn esim_tran_no(prefix: &str, n: u64) -> String {
    format!("{prefix}{n:09}")
}

/// The address bound to the n-th eSIM by `seed`.
pub fn email(prefix: &str, n: u64) -> String {
    format!("c{n}.{prefix}@example.com").to_lowercase()
}

/// 50 GB plans, as in the provider's samples.
pub const TOTAL: u64 = 53_687_091_200;

/// A DATA_USAGE delivery for the n-th eSIM with a distinct notifyId.
/// `remain_pct` of the allowance left: 5 crosses the 10 % threshold (one
/// notice), 70 crosses none (the eSIM is only recorded).
pub fn data_usage(prefix: &str, n: u64, remain_pct: u64) -> String {
    let tran = esim_tran_no(prefix, n);
    let remain = TOTAL / 100 * remain_pct;
    format!(
        concat!(
            r#"{{"notifyType":"DATA_USAGE","notifyId":"{p}-n{n}","eventGenerateTime":"2026-04-22T17:21:59Z","#,
            r#""content":{{"iccid":"8985{n:015}","orderNo":"B{tran}","esimTranNo":"{tran}","#,
            r#""transactionId":"{p}-tx{n}","totalVolume":{total},"orderUsage":{used},"remain":{remain},"#,
            r#""remainThreshold":0.1,"lastUpdateTime":"2026-04-22T15:53:03Z"}}}}"#
        ),
        p = prefix,
        n = n,
        tran = tran,
        total = TOTAL,
        used = TOTAL - remain,
        remain = remain,
    )
}

/// `--name value` from the command line, parsed, or the default.
pub fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} needs a valid value")),
        None => default,
    }
}

/// `--name value` as a string, required.
pub fn required(name: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        Some(i) => args.get(i + 1).cloned().unwrap_or_default(),
        None => {
            eprintln!("missing {name}");
            std::process::exit(2);
        }
    }
}
