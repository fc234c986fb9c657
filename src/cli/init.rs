//! `r2sync init`: a commented starter configuration and `.env.example`.

use std::path::Path;

use super::commands::CliError;
use super::{ExitCode, InitArgs};

/// The starter configuration. Every line is a comment or a valid setting,
/// so the file parses as written (a test checks that).
pub const STARTER_CONFIG: &str = r#"# r2sync configuration. Flags and R2SYNC_* variables win over this file.
# Reference: docs/operations.md in the r2sync repository.

# Which documents: a subdirectory of the repository and globs below it.
# root = "docs"
# include = ["*.md", "*.markdown"]
# exclude = ["drafts/**"]

# Where they go: r2://BUCKET/PREFIX, s3://BUCKET/PREFIX or file://./DIR.
# Without a target, r2sync writes to ./r2sync-bucket.
# target = "r2://my-docs-bucket/docs"

# What happens to objects whose source file is gone: "archive" (copy under
# PREFIX/.r2sync/archive, then delete) or "delete".
# delete-mode = "archive"
# max-deletes = 256

# Requests in flight, retries per request, and the timeout in seconds.
# concurrency = 16
# retries = 10
# timeout = 30

# Leave out documents whose front matter says draft: true.
# skip-drafts = true

# A JSON Lines catalog of every document, for search and embedding pipelines.
# catalog = "catalog.jsonl"

# [front-matter]
# mode = "strip"              # or "keep" to upload front matter too
# [front-matter.metadata]     # front matter field = object metadata name
# author = "author"

# Per-path rules, applied in order; later rules override earlier ones.
# [[rules]]
# match = "**"
# cache-control = "max-age=300"
# content-language = "en"
#
# [[rules]]
# match = "blog/**"
# extension = "drop"          # "keep", "drop" or a new extension such as ".html"
# index-to-directory = true   # blog/index.md -> key blog

# Named targets, chosen with --target-name NAME.
# [targets.staging]
# target = "r2://my-docs-staging/docs"
#
# [targets.production]
# target = "r2://my-docs-bucket/docs"
# jurisdiction = "eu"         # for buckets in the EU jurisdiction
"#;

/// The starter `.env.example`, the same text as the repository's own.
pub const STARTER_ENV: &str = include_str!("../../.env.example");

pub fn run(args: &InitArgs) -> Result<ExitCode, CliError> {
    let files = [
        ("r2sync.toml", STARTER_CONFIG),
        (".env.example", STARTER_ENV),
    ];

    // Check both before writing either, so that a refusal writes nothing.
    if !args.force {
        let existing: Vec<String> = files
            .iter()
            .map(|(name, _)| args.dir.join(name))
            .filter(|path| path.exists())
            .map(|path| path.display().to_string())
            .collect();
        if !existing.is_empty() {
            return Err(CliError::Exists { paths: existing });
        }
    }
    for (name, content) in files {
        write(&args.dir.join(name), content)?;
        eprintln!("Wrote {}", args.dir.join(name).display());
    }

    eprintln!(
        "\nNext steps:\n  \
         1. Set target (and root) in r2sync.toml.\n  \
         2. For R2, copy .env.example to .env and fill in R2_ACCOUNT_ID, R2_ACCESS_KEY_ID and\n     \
            R2_SECRET_ACCESS_KEY; add .env to .gitignore so it never reaches Git.\n  \
         3. Run `r2sync doctor` to check the endpoint and bucket.\n  \
         4. Run `r2sync plan` to see what would change, then `r2sync apply`."
    );
    Ok(ExitCode::Success)
}

fn write(path: &Path, content: &str) -> Result<(), CliError> {
    std::fs::write(path, content).map_err(|source| CliError::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starter_config_parses() {
        let config: crate::config::FileConfig = toml::from_str(STARTER_CONFIG).unwrap();
        assert_eq!(config, crate::config::FileConfig::default());
    }

    #[test]
    fn starter_config_parses_uncommented() {
        // Every commented setting is valid once uncommented.
        let uncommented: String = STARTER_CONFIG
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(rest)
                    if !rest.starts_with(|c: char| c.is_uppercase())
                        && !rest.starts_with("r2sync") =>
                {
                    rest
                }
                _ => line,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let config: crate::config::FileConfig =
            toml::from_str(&uncommented).unwrap_or_else(|err| panic!("{err}\n{uncommented}"));
        assert_eq!(config.rules.len(), 2);
        assert_eq!(config.targets.len(), 2);
        assert_eq!(config.front_matter.metadata["author"], "author");
    }
}
