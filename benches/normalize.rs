//! Time of `markdown::normalize` on generated documents shaped like real
//! documentation: a short command page, a guide with YAML front matter,
//! a page with TOML front matter, a Windows file (byte order mark, CRLF),
//! a Japanese page and a long reference page. Prints a Markdown table.
//!
//! Run with `cargo bench --bench normalize`. `NORMALIZE_BENCH_SECONDS` sets
//! the time spent on each case (default 1).

mod common;

use std::fmt::Write as _;
use std::time::Duration;

use common::{format_duration, measure};
use r2sync::markdown::{self, FrontMatterMode, NormalizeOptions};

/// Generates a command page in the style of a cheat sheet: no front matter,
/// a title, a quoted summary and examples in inline code.
fn command_page(name: &str) -> String {
    let mut page = format!(
        "# {name}\n\n> Create, list and extract archives.\n> More information: <https://docs.invalid/{name}>.\n\n"
    );
    let examples = [
        (
            "Create an archive from files",
            "cf {{path/to/target.tar}} {{path/to/file1 path/to/file2 ...}}",
        ),
        (
            "Create a compressed archive",
            "czf {{path/to/target.tar.gz}} {{path/to/file1}}",
        ),
        (
            "Extract an archive into the current directory verbosely",
            "xvf {{path/to/source.tar}}",
        ),
        (
            "List the contents of an archive",
            "tvf {{path/to/source.tar}}",
        ),
        (
            "Extract files matching a pattern",
            "xf {{path/to/source.tar}} --wildcards \"{{*.html}}\"",
        ),
    ];
    for (description, arguments) in examples {
        let _ = write!(page, "- {description}:\n\n`{name} {arguments}`\n\n");
    }
    page
}

/// Generates a section of prose with inline markup, links, a list, a code
/// block, a table and a block quote.
fn prose(section: usize) -> String {
    format!(
        "## Section {section}: configuration\n\n\
         The *site configuration* sets defaults for every page. Values in a page's \
         front matter override them, and [cascade](/docs/cascade/) passes values \
         down to descendants. Use `hugo config` to print the merged result.\n\n\
         - `baseURL` is the absolute URL of the published site;\n\
         - `languageCode` is used in RSS feeds and the `lang` attribute;\n\
         - `title` appears in templates through `.Site.Title`.\n\n\
         ```toml\nbaseURL = 'https://example.invalid/'\nlanguageCode = 'en-us'\ntitle = 'Section {section}'\n```\n\n\
         | Setting | Type | Default |\n|---|---|---|\n| `buildDrafts` | bool | `false` |\n| `timeout` | string | `\"30s\"` |\n\n\
         > **Note:** changing the configuration restarts the development server.\n\n"
    )
}

fn yaml_guide() -> String {
    let mut page = String::from(
        "---\ntitle: Configure the site\ndescription: Set defaults for every page, per environment.\n\
         categories: [configuration]\nkeywords: [config, settings, environment]\n\
         weight: 20\ntoc: true\ndate: 2024-03-01\naliases:\n  - /overview/configuration/\n  - /getting-started/configuration/\n---\n\n",
    );
    for section in 0..6 {
        page.push_str(&prose(section));
    }
    page
}

fn toml_page() -> String {
    let mut page = String::from(
        "+++\ntitle = \"Templates\"\ndescription = \"Lookup order and base templates.\"\nweight = 30\ndraft = false\ntags = [\"templates\", \"layouts\"]\n+++\n\n",
    );
    for section in 0..3 {
        page.push_str(&prose(section));
    }
    page
}

fn windows_page() -> String {
    let page = format!("\u{feff}{}", yaml_guide());
    page.replace('\n', "\r\n")
}

fn japanese_page() -> String {
    let mut page = String::from("---\ntitle: はじめに\n---\n\n# はじめに\n\n");
    for index in 0..40 {
        let _ = write!(
            page,
            "これは設定についての説明です。ページの前付けはサイトの既定値を上書きします。段落 {index} では `hugo server` を使います。\n\n"
        );
    }
    page
}

fn reference_page() -> String {
    let mut page = String::from("---\ntitle: Function reference\n---\n\n");
    for index in 0..150 {
        let _ = write!(
            page,
            "### fn{index}\n\nReturns the value of argument {index} after conversion. \
             Raises an error when the argument is *missing* or has the wrong type.\n\n\
             ```go-html-template\n{{{{ fn{index} .Page.Params.value }}}}\n```\n\n"
        );
        page.push_str(&prose(index));
    }
    page
}

fn main() {
    let seconds: f64 = std::env::var("NORMALIZE_BENCH_SECONDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1.0);
    let budget = Duration::from_secs_f64(seconds);

    let cases: Vec<(&str, String, FrontMatterMode)> = vec![
        ("command page", command_page("tar"), FrontMatterMode::Strip),
        ("YAML guide", yaml_guide(), FrontMatterMode::Strip),
        ("YAML guide, keep mode", yaml_guide(), FrontMatterMode::Keep),
        ("TOML page", toml_page(), FrontMatterMode::Strip),
        ("BOM and CRLF", windows_page(), FrontMatterMode::Strip),
        ("Japanese page", japanese_page(), FrontMatterMode::Strip),
        ("reference page", reference_page(), FrontMatterMode::Strip),
    ];

    println!("| document | bytes | best | median | throughput (best) | runs |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, text, mode) in &cases {
        let options = NormalizeOptions {
            front_matter: *mode,
            ..Default::default()
        };
        let raw = text.as_bytes();
        let timing = measure(budget, 20, || {
            markdown::normalize("docs/page.md", raw, &options).expect("the document normalizes")
        });
        let megabytes_per_second = raw.len() as f64 / timing.best.as_secs_f64() / 1e6;
        println!(
            "| {name} | {} | {} | {} | {megabytes_per_second:.0} MB/s | {} |",
            raw.len(),
            format_duration(timing.best),
            format_duration(timing.median),
            timing.runs
        );
    }
}
