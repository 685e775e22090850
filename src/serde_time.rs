//! Instants in two shapes: RFC 3339 text where people read them (the admin
//! API's JSON), Unix milliseconds where the store keeps them. A timestamp is
//! the commonest field of the store's records; as text it costs 25 to 32
//! bytes, as a variable-length integer six.
//!
//! Serde tells the two apart with `is_human_readable` (true for JSON, false
//! for the store's binary encoding), so one `#[serde(with = …)]` serves both
//! and the JSON the API shows is unchanged.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    if s.is_human_readable() {
        t.serialize(s)
    } else {
        s.serialize_i64(t.timestamp_millis())
    }
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    if d.is_human_readable() {
        DateTime::<Utc>::deserialize(d)
    } else {
        let ms = i64::deserialize(d)?;
        DateTime::from_timestamp_millis(ms)
            .ok_or_else(|| serde::de::Error::custom(format!("instant out of range: {ms} ms")))
    }
}

/// The same for `Option<DateTime<Utc>>`.
pub mod option {
    use super::*;

    #[derive(Serialize, Deserialize)]
    struct Wrapped(#[serde(with = "super")] DateTime<Utc>);

    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        t.map(Wrapped).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        Ok(Option::<Wrapped>::deserialize(d)?.map(|w| w.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct R {
        #[serde(with = "super")]
        at: DateTime<Utc>,
        #[serde(with = "super::option")]
        maybe: Option<DateTime<Utc>>,
    }

    #[test]
    fn text_for_json_and_milliseconds_for_the_store() {
        let at = DateTime::parse_from_rfc3339("2026-04-22T17:21:59.123Z")
            .unwrap()
            .with_timezone(&Utc);
        let r = R {
            at,
            maybe: Some(at),
        };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(
            json,
            r#"{"at":"2026-04-22T17:21:59.123Z","maybe":"2026-04-22T17:21:59.123Z"}"#
        );
        assert_eq!(serde_json::from_str::<R>(&json).unwrap(), r);
        let bin = postcard::to_allocvec(&r).unwrap();
        assert!(bin.len() < 16, "{} bytes", bin.len());
        assert_eq!(postcard::from_bytes::<R>(&bin).unwrap(), r);
        let none = R { at, maybe: None };
        let bin = postcard::to_allocvec(&none).unwrap();
        assert_eq!(postcard::from_bytes::<R>(&bin).unwrap(), none);
    }
}
