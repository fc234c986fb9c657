//! What r2sync derives from a document's Markdown: headings, the first
//! level-1 heading, the first paragraph and a word count. One pass of
//! pulldown-cmark, so the time is linear in the size of the document.

use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd};
use serde::Serialize;
use unicode_segmentation::UnicodeSegmentation;

/// One heading, with inline markup flattened to its text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Heading {
    pub level: u8,
    pub text: String,
}

/// Facts read from the Markdown body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Derived {
    pub headings: Vec<Heading>,
    /// Text of the first paragraph, trimmed, with soft breaks as spaces.
    pub first_paragraph: Option<String>,
    pub word_count: usize,
}

impl Derived {
    /// Text of the first level-1 heading, if any.
    pub fn first_h1(&self) -> Option<&str> {
        self.headings
            .iter()
            .find(|heading| heading.level == 1 && !heading.text.is_empty())
            .map(|heading| heading.text.as_str())
    }
}

/// Reads headings, the first paragraph and the word count from `markdown`.
///
/// Headings are ATX (`#`) or setext (underlined); a trailing `{#id}` is an
/// attribute, not text. Headings inside code blocks or HTML blocks are not
/// headings. Text in code blocks and HTML is not counted as words.
pub fn analyze(markdown: &str) -> Derived {
    let options =
        Options::ENABLE_HEADING_ATTRIBUTES | Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH;
    let mut derived = Derived::default();
    let mut heading: Option<(u8, String)> = None;
    let mut paragraph: Option<String> = None;
    let mut code_block_depth = 0usize;

    for event in Parser::new_ext(markdown, options) {
        match event {
            Event::Start(Tag::Heading { level, .. }) => {
                heading = Some((heading_level(level), String::new()))
            }
            Event::End(TagEnd::Heading(_)) => {
                if let Some((level, text)) = heading.take() {
                    derived.headings.push(Heading {
                        level,
                        text: collapse_spaces(&text),
                    });
                }
            }
            Event::Start(Tag::Paragraph)
                if derived.first_paragraph.is_none() && heading.is_none() =>
            {
                paragraph = Some(String::new());
            }
            Event::End(TagEnd::Paragraph) => {
                if let Some(text) = paragraph.take() {
                    let text = collapse_spaces(&text);
                    if !text.is_empty() {
                        derived.first_paragraph = Some(text);
                    }
                }
            }
            Event::Start(Tag::CodeBlock(_)) => code_block_depth += 1,
            Event::End(TagEnd::CodeBlock) => code_block_depth = code_block_depth.saturating_sub(1),
            Event::Text(text) | Event::Code(text) if code_block_depth == 0 => {
                derived.word_count += count_words(&text);
                if let Some((_, buffer)) = heading.as_mut() {
                    buffer.push_str(&text);
                }
                if let Some(buffer) = paragraph.as_mut() {
                    buffer.push_str(&text);
                }
            }
            Event::SoftBreak | Event::HardBreak => {
                if let Some((_, buffer)) = heading.as_mut() {
                    buffer.push(' ');
                }
                if let Some(buffer) = paragraph.as_mut() {
                    buffer.push(' ');
                }
            }
            _ => {}
        }
    }
    derived
}

fn heading_level(level: HeadingLevel) -> u8 {
    match level {
        HeadingLevel::H1 => 1,
        HeadingLevel::H2 => 2,
        HeadingLevel::H3 => 3,
        HeadingLevel::H4 => 4,
        HeadingLevel::H5 => 5,
        HeadingLevel::H6 => 6,
    }
}

/// Trims and turns every run of whitespace into one space.
fn collapse_spaces(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Counts words. Each CJK character (Han, Hiragana, Katakana, Hangul
/// syllables) is one word, because those scripts do not separate words
/// with spaces. In other scripts a word is a run that Unicode word
/// segmentation (UAX #29) marks as a word.
pub fn count_words(text: &str) -> usize {
    if text.is_ascii() {
        return count_ascii_words(text.as_bytes());
    }
    text.unicode_words()
        .map(|word| {
            // Most words are ASCII, where no character is CJK.
            if word.is_ascii() {
                return usize::from(word.bytes().any(|byte| byte.is_ascii_alphanumeric()));
            }
            let cjk = word.chars().filter(|&character| is_cjk(character)).count();
            let other = word
                .chars()
                .any(|character| !is_cjk(character) && character.is_alphanumeric());
            cjk + usize::from(other)
        })
        .sum()
}

/// Word break classes of ASCII characters in UAX #29 that matter inside a
/// word. Every other ASCII character (spaces, line breaks, `"` and the
/// rest of the punctuation) ends a word.
#[derive(Clone, Copy, PartialEq, Eq)]
enum WordClass {
    Letter,
    Numeric,
    /// `_`, which joins letters and digits.
    ExtendNumLet,
    /// `:`, between two letters.
    MidLetter,
    /// `,` and `;`, between two digits.
    MidNum,
    /// `.` and `'`, between two letters or two digits.
    MidNumLet,
    Other,
}

fn word_class(byte: u8) -> WordClass {
    match byte {
        b'a'..=b'z' | b'A'..=b'Z' => WordClass::Letter,
        b'0'..=b'9' => WordClass::Numeric,
        b'_' => WordClass::ExtendNumLet,
        b':' => WordClass::MidLetter,
        b',' | b';' => WordClass::MidNum,
        b'.' | b'\'' => WordClass::MidNumLet,
        _ => WordClass::Other,
    }
}

/// Counts the words of ASCII text exactly as `unicode_words` segments it,
/// without its Unicode tables. A word is a run of letters, digits and `_`
/// (rules WB5, WB8 to WB10, WB13a and WB13b) that contains a letter or a
/// digit. The run continues across one `:`, `.` or `'` between two letters
/// (WB6, WB7), and across one `,`, `;`, `.` or `'` between two digits
/// (WB11, WB12). The tests compare it with `unicode_words`.
fn count_ascii_words(text: &[u8]) -> usize {
    let joins_word = |class| {
        matches!(
            class,
            WordClass::Letter | WordClass::Numeric | WordClass::ExtendNumLet
        )
    };
    let mut count = 0;
    let mut index = 0;
    while index < text.len() {
        if !joins_word(word_class(text[index])) {
            index += 1;
            continue;
        }
        let mut has_alphanumeric = false;
        loop {
            let class = word_class(text[index]);
            has_alphanumeric |= matches!(class, WordClass::Letter | WordClass::Numeric);
            let Some(&next) = text.get(index + 1) else {
                break;
            };
            let next_class = word_class(next);
            if joins_word(next_class) {
                index += 1;
                continue;
            }
            let after_class = text.get(index + 2).map(|&byte| word_class(byte));
            let across = matches!(
                (class, next_class, after_class),
                (
                    WordClass::Letter,
                    WordClass::MidLetter | WordClass::MidNumLet,
                    Some(WordClass::Letter),
                ) | (
                    WordClass::Numeric,
                    WordClass::MidNum | WordClass::MidNumLet,
                    Some(WordClass::Numeric),
                )
            );
            if !across {
                break;
            }
            index += 2;
        }
        index += 1;
        count += usize::from(has_alphanumeric);
    }
    count
}

fn is_cjk(character: char) -> bool {
    matches!(character as u32,
        0x3040..=0x30FF     // Hiragana, Katakana
        | 0x3400..=0x4DBF   // CJK Extension A
        | 0x4E00..=0x9FFF   // CJK Unified Ideographs
        | 0xAC00..=0xD7AF   // Hangul syllables
        | 0xF900..=0xFAFF   // CJK Compatibility Ideographs
        | 0x20000..=0x2FA1F // CJK Extensions B and later
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atx_and_setext_headings() {
        let derived = analyze("Intro\n\nSetext *title*\n=============\n\n## Sub `code` {#sub}\n");
        assert_eq!(
            derived.headings,
            vec![
                Heading {
                    level: 1,
                    text: "Setext title".into()
                },
                Heading {
                    level: 2,
                    text: "Sub code".into()
                },
            ]
        );
        assert_eq!(derived.first_h1(), Some("Setext title"));
    }

    #[test]
    fn headings_in_code_and_html_blocks_are_ignored() {
        let derived =
            analyze("```\n# not a heading\n```\n\n<div>\n# not one either\n</div>\n\n# Real\n");
        assert_eq!(derived.first_h1(), Some("Real"));
        assert_eq!(derived.headings.len(), 1);
    }

    #[test]
    fn first_paragraph_is_trimmed_text() {
        let derived = analyze("# T\n\n  First *para*\ngraph with [a link](x).  \n\nSecond.\n");
        assert_eq!(
            derived.first_paragraph.as_deref(),
            Some("First para graph with a link.")
        );
    }

    #[test]
    fn words_count_cjk_per_character() {
        assert_eq!(count_words("Hello, wide world!"), 3);
        assert_eq!(count_words("日本語の文章"), 6);
        assert_eq!(count_words("Rust と 日本"), 4);
        // UAX #29 keeps apostrophes and decimal points inside a word, not hyphens.
        assert_eq!(count_words("don't stop-here 3.14"), 4);
    }

    /// Counts words with `unicode_words` alone, the reference for ASCII.
    fn reference_count(text: &str) -> usize {
        text.unicode_words().count()
    }

    #[test]
    fn ascii_words_match_unicode_segmentation() {
        let cases = [
            "don't stop-here 3.14",
            "a.b.c a..b a. .a 1,000.50 1,a a:b 1:2 a1.b 1.a",
            "__init__ _ __ a_1 1_a _1 ;; ' '' a'b 1'2 \"quoted\"",
            "e.g. i.e., U.S.A. 12:30 v1.2.3 path/to/file.md foo-bar",
            "tab\tseparated\r\nlines\x0bvertical\x0cfeed",
        ];
        for text in cases {
            assert_eq!(
                count_ascii_words(text.as_bytes()),
                reference_count(text),
                "{text:?}"
            );
        }
    }

    #[test]
    fn ascii_words_match_for_every_short_string() {
        // Every string of up to five characters from one character of each
        // class, and every ASCII character between two of each.
        let classes: Vec<u8> = b"aZ0_:,;.' \"-\t\n\r\x0b".to_vec();
        let mut texts: Vec<Vec<u8>> = vec![Vec::new()];
        for _ in 0..5 {
            let longer: Vec<Vec<u8>> = texts
                .iter()
                .filter(|text| text.len() == texts.last().unwrap().len())
                .flat_map(|text| {
                    classes.iter().map(move |&byte| {
                        let mut longer = text.clone();
                        longer.push(byte);
                        longer
                    })
                })
                .collect();
            texts.extend(longer);
        }
        for byte in 0..=127u8 {
            for &before in &classes {
                for &after in &classes {
                    texts.push(vec![before, byte, after]);
                    texts.push(vec![before, before, byte, after, after]);
                }
            }
        }
        for text in &texts {
            let text = std::str::from_utf8(text).unwrap();
            assert_eq!(
                count_ascii_words(text.as_bytes()),
                reference_count(text),
                "{text:?}"
            );
        }
    }

    #[test]
    fn code_blocks_are_not_words() {
        assert_eq!(
            analyze("one two\n\n```\nthree four five\n```\n").word_count,
            2
        );
    }

    /// A document of `scale` units of every pathological shape: deep block
    /// quotes, deep lists, long lines and unclosed emphasis.
    fn pathological(scale: usize) -> String {
        let mut input = ">".repeat(scale);
        input.push_str(" deep\n\n");
        for depth in 0..scale {
            input.push_str(&" ".repeat((depth % 32) * 2));
            input.push_str("- item\n");
        }
        input.push_str(&"*open _emphasis [link ".repeat(scale));
        input.push_str("\n\n");
        input.push_str(&"word ".repeat(scale * 10));
        input
    }

    fn fastest_of_three(input: &str) -> std::time::Duration {
        (0..3)
            .map(|_| {
                let started = std::time::Instant::now();
                std::hint::black_box(analyze(input));
                started.elapsed()
            })
            .min()
            .unwrap()
    }

    #[test]
    fn pathological_input_scales_linearly() {
        // Four times the input should take about four times as long; a
        // quadratic step would take sixteen. The bound leaves room for noise.
        let small = fastest_of_three(&pathological(5_000));
        let large = fastest_of_three(&pathological(20_000));
        let ratio = large.as_secs_f64() / small.as_secs_f64().max(1e-6);
        assert!(
            ratio < 9.0,
            "4x input took {ratio:.1}x as long ({small:?} -> {large:?})"
        );
    }
}
