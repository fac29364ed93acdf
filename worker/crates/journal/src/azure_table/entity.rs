//! Entity encoding: how a journal record and a name claim are laid out as Table entities
//! (see the parent module's table), key escaping, chunking of a record's JSON over Binary
//! properties, and reading the version and value back.
//!
//! May touch: nothing; pure functions over strings, bytes and JSON.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value, json};

use super::{CHUNK_BYTES, MAX_RECORD_BYTES, MAX_ROW_KEY_BYTES, RECORD_PARTITION};
use crate::{JournalError, NameClaim};

pub(super) fn record_entity(
    key: &str,
    row: &str,
    version: u64,
    json: &[u8],
) -> Result<Map<String, Value>, JournalError> {
    if json.len() > MAX_RECORD_BYTES {
        return Err(JournalError::Refused(format!(
            "journal record {key} is {} bytes of JSON, more than the {MAX_RECORD_BYTES} an Azure Table entity holds; the saga record must shrink",
            json.len()
        )));
    }
    let mut entity = Map::new();
    entity.insert("PartitionKey".into(), json!(RECORD_PARTITION));
    entity.insert("RowKey".into(), json!(row));
    entity.insert("Version@odata.type".into(), json!("Edm.Int64"));
    entity.insert("Version".into(), json!(version.to_string()));
    let chunks: Vec<&[u8]> = json.chunks(CHUNK_BYTES).collect();
    entity.insert("Chunks".into(), json!(chunks.len()));
    for (i, chunk) in chunks.iter().enumerate() {
        entity.insert(format!("Data{i}@odata.type"), json!("Edm.Binary"));
        entity.insert(format!("Data{i}"), json!(BASE64.encode(chunk)));
    }
    Ok(entity)
}

pub(super) fn corrupt(key: &str, message: impl Into<String>) -> JournalError {
    JournalError::Corrupt {
        key: key.to_string(),
        message: message.into(),
    }
}

pub(super) fn entity_version(key: &str, entity: &Map<String, Value>) -> Result<u64, JournalError> {
    // Without metadata, the service writes an Int64 as a JSON string.
    match entity.get("Version") {
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| corrupt(key, format!("Version {s:?} is not a number"))),
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| corrupt(key, format!("Version {n} is not a version"))),
        _ => Err(corrupt(key, "the entity has no Version")),
    }
}

pub(super) fn entity_value(key: &str, entity: &Map<String, Value>) -> Result<Value, JournalError> {
    let chunks = entity
        .get("Chunks")
        .and_then(Value::as_u64)
        .ok_or_else(|| corrupt(key, "the entity has no Chunks count"))?;
    let mut json = Vec::new();
    for i in 0..chunks {
        let part = entity
            .get(&format!("Data{i}"))
            .and_then(Value::as_str)
            .ok_or_else(|| corrupt(key, format!("chunk Data{i} of {chunks} is missing")))?;
        let bytes = BASE64
            .decode(part)
            .map_err(|e| corrupt(key, format!("chunk Data{i} is not base64: {e}")))?;
        json.extend_from_slice(&bytes);
    }
    serde_json::from_slice(&json)
        .map_err(|e| corrupt(key, format!("stored value is not JSON: {e}")))
}

pub(super) fn is_kept(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.')
}

/// Escapes a key for use as a RowKey (see the module docs).
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if is_kept(byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("~{byte:02X}"));
        }
    }
    out
}

pub(super) fn escape_key(key: &str) -> Result<String, JournalError> {
    let row = escape(key);
    if row.is_empty() || row.len() > MAX_ROW_KEY_BYTES {
        return Err(JournalError::Refused(format!(
            "journal key {key:?} escapes to {} bytes; an Azure Table RowKey holds 1 to {MAX_ROW_KEY_BYTES}",
            row.len()
        )));
    }
    Ok(row)
}

pub(super) fn claim_row_key(claim: &NameClaim) -> Result<String, JournalError> {
    let row = format!("{}:{}", escape(&claim.kind), escape(&claim.name));
    if row.len() > MAX_ROW_KEY_BYTES {
        return Err(JournalError::Refused(format!(
            "the {} name {:?} is too long to claim in Azure Table",
            claim.kind, claim.name
        )));
    }
    Ok(row)
}

pub(super) fn unescape_key(row: &str) -> Result<String, JournalError> {
    let bad = || corrupt(row, "the RowKey is not an escaped journal key");
    let bytes = row.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'~' {
            let hex = row.get(i + 1..i + 3).ok_or_else(bad)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// Percent-encodes a query parameter value (everything but unreserved characters), with `%20`
/// for spaces: the Table service does not read `+` as a space.
pub(super) fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

pub(super) fn validate_table_name(table: &str) -> Result<(), JournalError> {
    let ok = (3..=63).contains(&table.len())
        && table.starts_with(|c: char| c.is_ascii_alphabetic())
        && table.chars().all(|c| c.is_ascii_alphanumeric())
        && !table.eq_ignore_ascii_case("tables");
    if ok {
        Ok(())
    } else {
        Err(JournalError::Refused(format!(
            "{table:?} is not a valid Azure table name: 3 to 63 letters and digits, starting with a letter"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_escape_to_safe_row_keys_and_back() {
        for key in ["tenant-1", "a/b c", "x#y?z\\w'q", "ünï:~%", "UPPER.lower_9"] {
            let row = escape_key(key).unwrap();
            assert!(
                row.bytes()
                    .all(|b| is_kept(b) || b == b'~' || b.is_ascii_hexdigit()),
                "{row}"
            );
            assert_eq!(unescape_key(&row).unwrap(), key);
        }
        assert_eq!(escape("a/b"), "a~2Fb");
        assert!(escape_key("").is_err());
        assert!(escape_key(&"/".repeat(400)).is_err());
    }

    #[test]
    fn a_claim_row_key_separates_kind_and_name_unambiguously() {
        let a = claim_row_key(&NameClaim {
            kind: "a:b".into(),
            name: "c".into(),
        })
        .unwrap();
        let b = claim_row_key(&NameClaim {
            kind: "a".into(),
            name: "b:c".into(),
        })
        .unwrap();
        assert_ne!(a, b);
        assert_eq!(a, "a~3Ab:c");
    }

    #[test]
    fn a_record_is_split_into_chunks_and_reassembled() {
        // 200 KiB of multi-byte text and escapes, so chunk boundaries fall inside characters.
        let text: String = "ünïcødé ✓ \"quotes\" \\ ".repeat(200 * 1024 / 24);
        let value = json!({ "steps": [text.clone(), text] });
        let json = serde_json::to_vec(&value).unwrap();
        let entity = record_entity("k", "k", 7, &json).unwrap();
        assert_eq!(entity["Chunks"], json!(json.len().div_ceil(CHUNK_BYTES)));
        assert!(entity.len() < 255, "an entity holds at most 255 properties");
        // What the service sends back without metadata: no type annotations.
        let returned: Map<String, Value> = entity
            .into_iter()
            .filter(|(k, _)| !k.contains("@odata"))
            .collect();
        assert_eq!(entity_version("k", &returned).unwrap(), 7);
        assert_eq!(entity_value("k", &returned).unwrap(), value);
    }

    #[test]
    fn a_record_too_large_for_one_entity_is_refused() {
        let json = vec![b' '; MAX_RECORD_BYTES + 1];
        assert!(matches!(
            record_entity("k", "k", 1, &json),
            Err(JournalError::Refused(_))
        ));
    }

    #[test]
    fn a_missing_chunk_is_corruption() {
        let mut entity = record_entity("k", "k", 1, &vec![b'1'; CHUNK_BYTES + 1]).unwrap();
        entity.remove("Data1");
        assert!(matches!(
            entity_value("k", &entity),
            Err(JournalError::Corrupt { .. })
        ));
    }
}
