//! Identifier newtypes; on the wire every ID is a decimal string.
//!
//! IDs are 63-bit snowflakes. JavaScript numbers lose precision above 2^53,
//! so JSON carries them as strings (as Twitter and Discord do).

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = std::num::ParseIntError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse::<i64>().map($name)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any(IdVisitor).map($name)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                id_schema()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

id_type!(
    /// A user's ID.
    UserId
);
id_type!(
    /// A chat's ID (1:1 or group).
    ChatId
);
id_type!(
    /// A server-assigned message ID: a snowflake, so ordering by ID is ordering by time.
    MessageId
);

fn id_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .pattern(Some("^[0-9]{1,19}$"))
        .description(Some("63-bit snowflake ID as a decimal string"))
        .examples([serde_json::json!("7263548392017920001")])
        .into()
}

/// Accepts a decimal string (the canonical form) or a non-negative integer.
struct IdVisitor;

impl Visitor<'_> for IdVisitor {
    type Value = i64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an ID as a decimal string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<i64, E> {
        match v.parse::<i64>() {
            Ok(n) if n >= 0 && !v.starts_with('+') => Ok(n),
            _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
        i64::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
        if v >= 0 { Ok(v) } else { Err(E::invalid_value(de::Unexpected::Signed(v), &self)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_travel_as_strings() {
        let id = MessageId(7_263_548_392_017_920_001);
        let json = serde_json::to_string(&id).unwrap_or_default();
        assert_eq!(json, "\"7263548392017920001\"");
        let back: MessageId = serde_json::from_str(&json).unwrap_or(MessageId(0));
        assert_eq!(back, id);
    }

    #[test]
    fn malformed_ids_are_rejected() {
        for bad in ["\"-1\"", "\"abc\"", "\"\"", "-5", "\"+3\"", "\"99999999999999999999\""] {
            assert!(serde_json::from_str::<UserId>(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(serde_json::from_str::<UserId>("42").ok(), Some(UserId(42)));
    }
}
