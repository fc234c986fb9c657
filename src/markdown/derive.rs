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
