//! JSON request bodies parsed strictly: an object that repeats a key is refused.
//! serde_json keeps the last value of a repeated key, so `{"card":{"number":A,
//! "number":B}}` would reach the vault as B while a gateway or a WAF in front of
//! it may have inspected A.

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Builds a [`Value`], failing on a repeated key.
struct Strict;

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(Strict)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("a number JSON cannot hold"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Strict.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Strict)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                // The key is named only when it looks like one of the API's field
                // names: a key can be anything, a card number included.
                let named =
                    key.len() <= 32 && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
                return Err(A::Error::custom(if named {
                    format!("the key `{key}` appears twice in one object")
                } else {
                    "a key appears twice in one object".to_owned()
                }));
            }
            let value = map.next_value_seed(Strict)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// Parses `raw` as one JSON value, refusing an object that repeats a key.
pub(crate) fn from_slice(raw: &[u8]) -> serde_json::Result<Value> {
    let mut de = serde_json::Deserializer::from_slice(raw);
    let value = Strict.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_values_as_serde_json_and_refuses_repeated_keys() {
        for text in [
            r#"{"a":[1,-2,3.5,true,null,"x"],"b":{"c":{}}}"#,
            "[]",
            "\"s\"",
            "18446744073709551615",
        ] {
            assert_eq!(
                from_slice(text.as_bytes()).unwrap(),
                serde_json::from_str::<Value>(text).unwrap(),
                "{text}"
            );
        }
        let e = from_slice(br#"{"card":{"number":"1","number":"2"}}"#).unwrap_err();
        assert!(e.is_data(), "{e}");
        assert!(e.to_string().contains("`number` appears twice"), "{e}");
        let e = from_slice(br#"{"4111111111111111":1,"4111111111111111":2}"#).unwrap_err();
        assert!(!e.to_string().contains("4111"), "{e}");
        assert!(from_slice(br#"{"a":1}{"#).unwrap_err().is_syntax());
    }
}
