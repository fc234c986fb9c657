//! Decoding a file's bytes into text: UTF-8 (with or without a byte order
//! mark), UTF-16 with a byte order mark, or a declared fallback encoding.

use std::borrow::Cow;

use encoding_rs::{Encoding, UTF_16BE, UTF_16LE};

use super::MarkdownError;

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";
const UTF16_LE_BOM: &[u8] = b"\xFF\xFE";
const UTF16_BE_BOM: &[u8] = b"\xFE\xFF";

/// Decodes `raw` into text without a byte order mark. UTF-8 input is
/// borrowed, not copied.
///
/// UTF-8 is expected. UTF-16 is accepted when a byte order mark declares it.
/// Other bytes are an error naming the first invalid byte, unless a
/// fallback encoding is given (for example windows-1252), in which case the
/// whole file is decoded with it. NUL characters are rejected in every
/// encoding, because no Markdown renderer keeps them.
pub fn decode<'a>(
    path: &str,
    raw: &'a [u8],
    fallback: Option<&'static Encoding>,
) -> Result<Cow<'a, str>, MarkdownError> {
    let text = if let Some(rest) = raw.strip_prefix(UTF8_BOM) {
        utf8(path, rest, UTF8_BOM.len(), fallback)?
    } else if let Some(rest) = raw.strip_prefix(UTF16_LE_BOM) {
        utf16(path, rest, UTF_16LE)?
    } else if let Some(rest) = raw.strip_prefix(UTF16_BE_BOM) {
        utf16(path, rest, UTF_16BE)?
    } else {
        utf8(path, raw, 0, fallback)?
    };

    if let Some(position) = text.find('\0') {
        return Err(MarkdownError::Nul {
            path: path.to_string(),
            line: line_of(text.as_bytes(), position),
            offset: position,
        });
    }
    Ok(text)
}

fn utf8<'a>(
    path: &str,
    bytes: &'a [u8],
    bom_len: usize,
    fallback: Option<&'static Encoding>,
) -> Result<Cow<'a, str>, MarkdownError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Ok(Cow::Borrowed(text)),
        Err(err) => match fallback {
            Some(encoding) => {
                let (text, _) = encoding.decode_without_bom_handling(bytes);
                tracing::debug!(
                    path,
                    encoding = encoding.name(),
                    "decoded with the fallback encoding"
                );
                Ok(Cow::Owned(text.into_owned()))
            }
            None => {
                let offset = err.valid_up_to();
                Err(MarkdownError::InvalidUtf8 {
                    path: path.to_string(),
                    offset: offset + bom_len,
                    line: line_of(bytes, offset),
                })
            }
        },
    }
}

fn utf16(
    path: &str,
    bytes: &[u8],
    encoding: &'static Encoding,
) -> Result<Cow<'static, str>, MarkdownError> {
    encoding
        .decode_without_bom_handling_and_without_replacement(bytes)
        .map(|text| Cow::Owned(text.into_owned()))
        .ok_or_else(|| MarkdownError::InvalidUtf16 {
            path: path.to_string(),
            encoding: encoding.name(),
        })
}

/// The 1-based line of a byte offset.
fn line_of(bytes: &[u8], offset: usize) -> usize {
    1 + bytes[..offset]
        .iter()
        .filter(|&&byte| byte == b'\n')
        .count()
}

/// Looks up a fallback encoding by its WHATWG label (`windows-1252`,
/// `latin1`, `shift_jis`, ...).
pub fn encoding_for_label(label: &str) -> Option<&'static Encoding> {
    Encoding::for_label(label.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_bom_is_dropped() {
        assert_eq!(decode("a.md", b"\xEF\xBB\xBFtext", None).unwrap(), "text");
    }

    #[test]
    fn utf16_with_bom_is_decoded() {
        let little: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain("é\n".encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        let big: Vec<u8> = [0xFE, 0xFF]
            .into_iter()
            .chain("é\n".encode_utf16().flat_map(u16::to_be_bytes))
            .collect();
        assert_eq!(decode("a.md", &little, None).unwrap(), "é\n");
        assert_eq!(decode("a.md", &big, None).unwrap(), "é\n");
    }

    #[test]
    fn latin1_needs_a_fallback() {
        let raw = b"line\ncaf\xE9\n";
        let err = decode("a.md", raw, None).unwrap_err().to_string();
        assert!(err.contains("byte 8"), "{err}");
        assert!(err.contains("line 2"), "{err}");
        let windows_1252 = encoding_for_label("windows-1252").unwrap();
        assert_eq!(
            decode("a.md", raw, Some(windows_1252)).unwrap(),
            "line\ncafé\n"
        );
    }

    #[test]
    fn nul_is_rejected_with_position() {
        let err = decode("a.md", b"ok\nbad\0here", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("NUL"), "{err}");
        assert!(err.contains("byte 6"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn odd_length_utf16_is_rejected() {
        let err = decode("a.md", b"\xFF\xFEa\x00b", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("UTF-16"), "{err}");
    }
}
