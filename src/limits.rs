//! Limits of S3 and R2 that every planned object must respect, checked
//! while planning so that a run either writes everything or nothing.
//!
//! Key characters and user metadata size are checked while the desired
//! state is built; this module adds what depends on the upload settings.

use crate::manifest::DesiredState;
use crate::remote::{MAX_PARTS, MAX_SINGLE_PUT};

/// Maximum object key length, in bytes of UTF-8, on S3 and R2.
pub const MAX_KEY_BYTES: usize = 1024;

/// Problems found, one line each, naming the source file.
#[derive(Debug, thiserror::Error)]
#[error("{} {} what S3 and R2 accept, so nothing was written:\n  {}\nfix them, or leave them out with --exclude 'GLOB'", problems.len(), if problems.len() == 1 { "document exceeds" } else { "documents exceed" }, problems.join("\n  "))]
pub struct LimitError {
    pub problems: Vec<String>,
}

/// Upload settings that decide which size limit applies.
#[derive(Clone, Copy, Debug)]
pub struct UploadLimits {
    pub multipart_threshold: u64,
    pub part_size: u64,
}

/// Checks key lengths and body sizes of every object.
pub fn check(desired: &DesiredState, upload: &UploadLimits) -> Result<(), LimitError> {
    let mut problems = Vec::new();
    for object in desired.objects.values() {
        let key_bytes = object.key.len();
        if key_bytes > MAX_KEY_BYTES {
            problems.push(format!(
                "{}: key is {key_bytes} bytes, more than the limit of {MAX_KEY_BYTES}; shorten the path, the target prefix or --root",
                object.source_path
            ));
        }

        let size = object.body.len() as u64;
        if size > upload.multipart_threshold {
            let parts = size.div_ceil(upload.part_size.max(1));
            if parts > MAX_PARTS {
                problems.push(format!(
                    "{}: {size} bytes need {parts} parts of {} bytes, more than the limit of {MAX_PARTS} parts; raise --part-size",
                    object.source_path, upload.part_size
                ));
            }
        } else if size > MAX_SINGLE_PUT {
            problems.push(format!(
                "{}: {size} bytes is more than the limit of {MAX_SINGLE_PUT} bytes for one upload; lower --multipart-threshold",
                object.source_path
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(LimitError { problems })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{content_type_headers, DesiredObject};
    use bytes::Bytes;
    use std::collections::BTreeMap;

    fn state(objects: &[(&str, usize)]) -> DesiredState {
        let mut desired = DesiredState::default();
        for (key, size) in objects {
            let object = DesiredObject::new(
                key.to_string(),
                format!("docs/{}.md", key.chars().take(8).collect::<String>()),
                Bytes::from(vec![b'x'; *size]),
                content_type_headers("text/markdown; charset=utf-8"),
                BTreeMap::new(),
            );
            desired.objects.insert(key.to_string(), object);
        }
        desired
    }

    const UPLOAD: UploadLimits = UploadLimits {
        multipart_threshold: 8 * 1024 * 1024,
        part_size: 8 * 1024 * 1024,
    };

    #[test]
    fn key_length_limit_boundary() {
        let fits = "k".repeat(MAX_KEY_BYTES);
        check(&state(&[(&fits, 1)]), &UPLOAD).unwrap();

        let long = "k".repeat(MAX_KEY_BYTES + 1);
        let err = check(&state(&[(&long, 1)]), &UPLOAD).unwrap_err();
        assert_eq!(err.problems.len(), 1);
        let message = err.to_string();
        assert!(
            message.contains("docs/kkkkkkkk.md: key is 1025 bytes"),
            "{message}"
        );
        assert!(message.contains("nothing was written"), "{message}");
    }

    #[test]
    fn key_length_counts_bytes() {
        // 342 three-byte characters are 1,026 bytes.
        let key = "あ".repeat(342);
        let err = check(&state(&[(&key, 1)]), &UPLOAD).unwrap_err();
        assert!(err.problems[0].contains("1026 bytes"), "{:?}", err.problems);
    }

    #[test]
    fn too_many_parts_refused() {
        let tiny_parts = UploadLimits {
            multipart_threshold: 10,
            part_size: 1,
        };
        let err = check(&state(&[("big", 10_001)]), &tiny_parts).unwrap_err();
        assert!(
            err.problems[0].contains("10001 parts"),
            "{:?}",
            err.problems
        );
        assert!(
            err.problems[0].contains("--part-size"),
            "{:?}",
            err.problems
        );
        check(&state(&[("fits", 10_000)]), &tiny_parts).unwrap();
    }
}
