//! Header-safe user metadata values.
//!
//! HTTP header values must be visible ASCII, so any other value is sent as
//! RFC 2047 encoded words (`=?UTF-8?B?...?=`). Cloudflare R2 decodes such
//! words on write and encodes them again on read, while Garage and moto store
//! the text as sent; decoding on read makes both look the same to the planner.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

/// Raw bytes per encoded word, so that each word stays under the 75
/// characters RFC 2047 allows.
const BYTES_PER_WORD: usize = 45;

/// Encodes `value` for an `x-amz-meta-*` header. Visible ASCII without
/// leading or trailing spaces is sent unchanged.
pub fn encode(value: &str) -> String {
    let plain = value.bytes().all(|byte| (b' '..=b'~').contains(&byte))
        && !value.starts_with(' ')
        && !value.ends_with(' ')
        && !value.starts_with("=?");
    if plain {
        return value.to_string();
    }

    let mut words = Vec::new();
    let mut start = 0;
    while start < value.len() {
        let mut end = (start + BYTES_PER_WORD).min(value.len());
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        words.push(format!(
            "=?UTF-8?B?{}?=",
            STANDARD.encode(&value[start..end])
        ));
        start = end;
    }
    words.join(" ")
}

/// Decodes a header value that may hold RFC 2047 encoded words; a value
/// that does not decode is returned as received.
pub fn decode(value: &str) -> String {
    if !value.contains("=?") {
        return value.to_string();
    }
    match rfc2047_decoder::decode(value.as_bytes()) {
        Ok(decoded) => decoded,
        Err(err) => {
            tracing::debug!(value, error = %err, "metadata value is not valid RFC 2047; keeping it as received");
            value.to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_passes_unchanged() {
        assert_eq!(encode("Getting started"), "Getting started");
    }

    #[test]
    fn non_ascii_round_trips() {
        for value in [
            "Café ☕",
            "日本語のタイトル",
            " leading space",
            "=?looks encoded?=",
        ] {
            let encoded = encode(value);
            assert!(encoded.is_ascii(), "{encoded}");
            assert_eq!(decode(&encoded), value);
        }
    }

    #[test]
    fn long_values_split_into_short_words() {
        let value = "é".repeat(200);
        let encoded = encode(&value);
        assert!(encoded.split(' ').all(|word| word.len() <= 75), "{encoded}");
        assert_eq!(decode(&encoded), value);
    }

    #[test]
    fn quoted_printable_words_decode() {
        assert_eq!(decode("=?UTF-8?Q?Caf=C3=A9?="), "Café");
    }
}
