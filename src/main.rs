//! The `r2sync` binary: parse arguments, set up logging, run the command and
//! map the outcome to an exit code.

use r2sync::cli::{self, ExitCode, LogFormat};
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    // Credentials and flag defaults may come from a .env file in the current
    // directory; variables already set win over it.
    let dotenv = dotenvy::dotenv();

    let cli = match cli::parse() {
        Ok(cli) => cli,
        Err(err) => {
            // Help and version are not errors; usage errors exit 1, because
            // 2 means "changes" for plan and check.
            let _ = err.print();
            let code = if err.use_stderr() {
                ExitCode::Failure
            } else {
                ExitCode::Success
            };
            return std::process::ExitCode::from(code as u8);
        }
    };

    let json_logs = cli.log_format == LogFormat::Json;
    init_tracing(cli.verbose, cli.quiet, cli.log_format);
    if let Err(err) = dotenv {
        if !err.not_found() {
            tracing::warn!("ignoring .env: {err}");
        }
    }

    let code = match cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            // Every error message already contains its cause, so the
            // chain of sources is not printed again.
            let code = err.exit_code();
            let err = anyhow::Error::new(err);
            if json_logs {
                tracing::error!(event = "error", "{err}");
            } else {
                eprintln!("error: {err}");
            }
            code
        }
    };
    std::process::ExitCode::from(code as u8)
}

/// Logs go to stderr: warnings by default (info for JSON logs, which are
/// meant for machines), more with each -v; RUST_LOG wins.
fn init_tracing(verbose: u8, quiet: bool, format: LogFormat) {
    let level = match (quiet, verbose, format) {
        (true, _, _) => "error",
        (false, 0, LogFormat::Text) => "warn",
        (false, 0, LogFormat::Json) | (false, 1, _) => "info",
        (false, 2, _) => "debug",
        (false, _, _) => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        LogFormat::Text => {
            let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
            builder
                .with_ansi(!no_color && std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_target(verbose >= 2)
                .init()
        }
    }
}
