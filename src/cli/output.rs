//! Output streams: data on stdout, status and progress on stderr.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Writes data to stdout. A reader that went away (`r2sync man | head`)
/// ends the output quietly instead of failing the command.
pub fn write_stdout(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(err) => eprintln!("error: cannot write to stdout: {err}"),
    }
}

/// Work smaller than this shows no progress bar.
const PROGRESS_MIN_ITEMS: u64 = 50;

/// Output settings for one command.
#[derive(Clone, Debug)]
pub struct Output {
    quiet: bool,
    progress: bool,
    color: bool,
    /// Status lines become log events, so stderr carries only JSON.
    json_logs: bool,
}

impl Output {
    /// `machine` is set for `--json`, where stdout carries only the JSON
    /// and no progress bar may interleave with it.
    pub fn new(quiet: bool, no_progress: bool, machine: bool, json_logs: bool) -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
        Output {
            quiet,
            progress: !quiet
                && !no_progress
                && !machine
                && !json_logs
                && std::io::stderr().is_terminal(),
            color: !no_color && std::io::stdout().is_terminal(),
            json_logs,
        }
    }

    /// Whether `--quiet` is set.
    pub fn quiet(&self) -> bool {
        self.quiet
    }

    /// Whether the plan printed on stdout may use colors.
    pub fn color(&self) -> bool {
        self.color
    }

    /// Prints a status line on stderr unless `--quiet`.
    pub fn status(&self, message: impl AsRef<str>) {
        if self.json_logs {
            tracing::info!(event = "status", "{}", message.as_ref());
        } else if !self.quiet {
            eprintln!("{}", message.as_ref());
        }
    }

    /// Prints a warning on stderr (also with `--quiet`), or logs it as a
    /// warning event.
    pub fn warn(&self, message: impl AsRef<str>) {
        if self.json_logs {
            tracing::warn!(event = "warning", "{}", message.as_ref());
        } else {
            eprintln!("warning: {}", message.as_ref());
        }
    }

    /// Prints an error line on stderr, or logs it as an error event.
    pub fn error(&self, message: impl AsRef<str>) {
        if self.json_logs {
            tracing::error!(event = "error", "{}", message.as_ref());
        } else {
            eprintln!("error: {}", message.as_ref());
        }
    }

    /// A progress bar on stderr for `len` steps, hidden when not on a
    /// terminal, with `--no-progress`, `--quiet` or `--json`, or for
    /// short work.
    pub fn progress(&self, len: u64, message: &'static str) -> ProgressBar {
        if !self.progress || len < PROGRESS_MIN_ITEMS {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} ({eta})")
                .expect("progress template is valid")
                .progress_chars("=> "),
        );
        bar.set_message(message);
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    }
}
