//! User metadata of one desired object, stored compactly.
//!
//! A desired state contains one of these per document, so its layout matters
//! at a million documents. A `BTreeMap<String, String>` of five entries
//! takes a 544-byte node and ten heap strings of at least 32 bytes each.
//! This type keeps every entry in one string, each name and value preceded
//! by its length in bytes and a colon (`4:team4:docs`), so the same five
//! entries take one allocation of about 200 bytes.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

/// User metadata by name, iterated in name order like a
/// `BTreeMap<String, String>`, so that hashes over either match.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct UserMetadata {
    /// The entries in name order, each name once: `LEN:NAME` then
    /// `LEN:VALUE`, with LEN in decimal bytes.
    text: String,
}

impl UserMetadata {
    pub fn new() -> Self {
        UserMetadata::default()
    }

    /// Sets `name` to `value`, replacing any earlier value. Inserting in
    /// name order is fastest, because each entry is then appended.
    pub fn insert(&mut self, name: impl AsRef<str>, value: impl AsRef<str>) {
        let (name, value) = (name.as_ref(), value.as_ref());
        let last_name = self.entries().last().map(|entry| entry.name);
        if last_name.is_none_or(|last| last < name) {
            let _ = write!(self.text, "{}:{name}{}:{value}", name.len(), value.len());
            return;
        }
        let mut position = 0;
        for entry in self.entries() {
            match entry.name.cmp(name) {
                std::cmp::Ordering::Less => position = entry.end,
                std::cmp::Ordering::Equal => {
                    self.text
                        .replace_range(entry.value_start..entry.end, &field(value));
                    return;
                }
                std::cmp::Ordering::Greater => break,
            }
        }
        let fields = field(name) + &field(value);
        self.text.insert_str(position, &fields);
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(entry_name, _)| *entry_name == name)
            .map(|(_, value)| value)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn len(&self) -> usize {
        self.entries().count()
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// Iterates over `(name, value)` pairs in name order.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            entries: self.entries(),
        }
    }

    /// Releases spare capacity once the object is complete.
    pub fn shrink_to_fit(&mut self) {
        self.text.shrink_to_fit();
    }

    /// Copies the entries into a map, as the remote layer sends them.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    fn entries(&self) -> Entries<'_> {
        Entries {
            text: &self.text,
            offset: 0,
        }
    }
}

/// Encodes one name or value as `LEN:TEXT`.
fn field(text: &str) -> String {
    format!("{}:{text}", text.len())
}

impl fmt::Debug for UserMetadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// One decoded entry, with its place in the text.
struct Entry<'a> {
    name: &'a str,
    value: &'a str,
    /// Offset where the value's length starts.
    value_start: usize,
    /// Offset just after the value.
    end: usize,
}

/// Decodes the entries of the text one after another.
struct Entries<'a> {
    text: &'a str,
    offset: usize,
}

impl<'a> Entries<'a> {
    /// Decodes the `LEN:TEXT` field at `start`; returns the text and the
    /// offset after it.
    fn field(&self, start: usize) -> (&'a str, usize) {
        let colon = start
            + self.text[start..]
                .find(':')
                .expect("metadata fields start with a length");
        let len: usize = self.text[start..colon]
            .parse()
            .expect("metadata field lengths are decimal");
        let end = colon + 1 + len;
        (&self.text[colon + 1..end], end)
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = Entry<'a>;

    fn next(&mut self) -> Option<Entry<'a>> {
        if self.offset == self.text.len() {
            return None;
        }
        let (name, value_start) = self.field(self.offset);
        let (value, end) = self.field(value_start);
        self.offset = end;
        Some(Entry {
            name,
            value,
            value_start,
            end,
        })
    }
}

/// Iterator over the entries of [`UserMetadata`] in name order.
pub struct Iter<'a> {
    entries: Entries<'a>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        self.entries.next().map(|entry| (entry.name, entry.value))
    }
}

impl<'a> IntoIterator for &'a UserMetadata {
    type Item = (&'a str, &'a str);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl<Name: AsRef<str>, Value: AsRef<str>> Extend<(Name, Value)> for UserMetadata {
    fn extend<I: IntoIterator<Item = (Name, Value)>>(&mut self, entries: I) {
        for (name, value) in entries {
            self.insert(name, value);
        }
    }
}

impl<Name: AsRef<str>, Value: AsRef<str>> FromIterator<(Name, Value)> for UserMetadata {
    fn from_iter<I: IntoIterator<Item = (Name, Value)>>(entries: I) -> Self {
        let mut metadata = UserMetadata::new();
        metadata.extend(entries);
        metadata
    }
}

impl From<BTreeMap<String, String>> for UserMetadata {
    fn from(map: BTreeMap<String, String>) -> Self {
        map.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iterates_in_name_order() {
        let mut metadata = UserMetadata::new();
        metadata.insert("r2sync-title", "T");
        metadata.insert("author", "A");
        metadata.insert("r2sync-path", "p.md");
        let entries: Vec<(&str, &str)> = metadata.iter().collect();
        assert_eq!(
            entries,
            [
                ("author", "A"),
                ("r2sync-path", "p.md"),
                ("r2sync-title", "T")
            ]
        );
    }

    #[test]
    fn insert_replaces_a_value() {
        let mut metadata = UserMetadata::new();
        metadata.insert("a", "1");
        metadata.insert("team", "short");
        metadata.insert("z", "26");
        metadata.insert("team", "a much longer value");
        assert_eq!(metadata.get("team"), Some("a much longer value"));
        metadata.insert("team", "");
        assert_eq!(metadata.get("team"), Some(""));
        assert_eq!(metadata.get("a"), Some("1"));
        assert_eq!(metadata.get("z"), Some("26"));
        assert_eq!(metadata.len(), 3);
        assert!(!metadata.contains_key("missing"));
    }

    #[test]
    fn matches_a_btree_map() {
        let map = BTreeMap::from([
            ("zeta".to_string(), "1".to_string()),
            ("alpha".to_string(), "".to_string()),
            ("r2sync-words".to_string(), "caf\u{e9}".to_string()),
            ("mid".to_string(), "\0 and 12:34 more".to_string()),
            ("13:".to_string(), ":".to_string()),
        ]);
        let metadata = UserMetadata::from(map.clone());
        assert_eq!(metadata.to_map(), map);
        let pairs: Vec<(&str, &str)> = (&metadata).into_iter().collect();
        let expected: Vec<(&str, &str)> = map
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        assert_eq!(pairs, expected);

        // Insertion order does not matter.
        let reversed: UserMetadata = map.iter().rev().collect();
        assert_eq!(reversed, metadata);
        assert_eq!(format!("{reversed:?}"), format!("{map:?}"));
    }
}
