//! Presentation: the exit-code table (documented in docs/operator-guide.md §Exit codes), writing
//! to stdout and stderr, human sizes, durations and counts, tables and progress bars. Progress goes
//! to stderr and only on a terminal.
//!
//! Every line the binary prints goes through [`outln!`] / [`errln!`] (a test forbids `println!`
//! and `eprintln!` in this crate). A closed pipe (`ibs backup list | head -1`) ends the output
//! quietly: the failed write is remembered, later output to that stream is dropped, and the
//! command finishes its work and exits with its own code — no panic, no SIGPIPE death half-way
//! through a command that holds a repository lock or feeds a child process (ADR 0027).

use ibs_engine::Progress;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// `println!` that ends quietly on a closed stdout.
macro_rules! outln {
    () => {
        $crate::output::out_line("")
    };
    ($($t:tt)*) => {
        $crate::output::out_line(&format!($($t)*))
    };
}

/// `eprintln!` that ends quietly on a closed stderr.
macro_rules! errln {
    () => {
        $crate::output::err_line("")
    };
    ($($t:tt)*) => {
        $crate::output::err_line(&format!($($t)*))
    };
}

static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);
static STDERR_CLOSED: AtomicBool = AtomicBool::new(false);

fn write_line(mut w: impl Write, closed: &AtomicBool, line: &str) {
    if closed.load(Ordering::Relaxed) {
        return;
    }
    if writeln!(w, "{line}").and_then(|_| w.flush()).is_err() {
        closed.store(true, Ordering::Relaxed);
    }
}

/// Writes one line to stdout; after a failed write (a closed pipe) it writes nothing more.
pub fn out_line(line: &str) {
    write_line(std::io::stdout().lock(), &STDOUT_CLOSED, line);
}

/// Writes one line to stderr; after a failed write it writes nothing more.
pub fn err_line(line: &str) {
    write_line(std::io::stderr().lock(), &STDERR_CLOSED, line);
}

/// Raw bytes to stdout (`ibs repo dump`): after a failed write (a closed pipe) every later write
/// fails at once with `BrokenPipe`, and [`stdout_closed`] says so.
pub struct RawStdout;

impl Write for RawStdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if STDOUT_CLOSED.load(Ordering::Relaxed) {
            return Err(std::io::ErrorKind::BrokenPipe.into());
        }
        std::io::stdout().lock().write(buf).inspect_err(|_| {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
        })
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if STDOUT_CLOSED.load(Ordering::Relaxed) {
            return Err(std::io::ErrorKind::BrokenPipe.into());
        }
        std::io::stdout().lock().flush().inspect_err(|_| {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
        })
    }
}

/// Whether a write to stdout failed (the reader went away).
pub fn stdout_closed() -> bool {
    STDOUT_CLOSED.load(Ordering::Relaxed)
}

pub mod exit {
    //! The one exit-code table (docs/operator-guide.md §Exit codes, ADR 0027): every command, `ibs
    //! repo …` and the controller client commands alike, exits with these.
    pub const OK: i32 = 0;
    pub const FAILURE: i32 = 1;
    /// Bad flags or values (clap), and input the controller rejected (HTTP 400).
    pub const USAGE: i32 = 2;
    pub const PARTIAL: i32 = 3;
    pub const CHECK_PROBLEMS: i32 = 4;
    /// Wrong or missing .pfx, wrong .pfx password, wrong certificate, wrong key file.
    pub const KEY: i32 = 5;
    /// Refused because something holds it or is in the way: a repository lock, a controller job
    /// (HTTP 409), a restore target with different files.
    pub const LOCKED: i32 = 6;
    pub const NOT_A_REPOSITORY: i32 = 7;
    /// The backup (or a planned component, a job, an alert) asked for does not exist (HTTP 404).
    pub const NOT_FOUND: i32 = 8;
    /// The API token is missing, wrong or expired, or its role lacks the right (HTTP 401/403).
    pub const ACCESS_DENIED: i32 = 9;
    /// A backup written by a newer ibs version or format revision, refused without `--allow-newer`
    /// (`ibs recover`; through the controller, its 409 with `override: allow_newer`).
    pub const NEWER_BACKUP: i32 = 15;
    pub const CAPACITY: i32 = 10;
    /// The share, or the controller, cannot be reached.
    pub const CONNECTIVITY: i32 = 11;
    pub const PATH: i32 = 12;
    pub const AUTHENTICATION: i32 = 13;
    pub const GENERAL: i32 = 14;
}

pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A duration, the one way every command prints one: `4.2s` under a minute, `3m 04s` under an
/// hour, else `2h 03m 04s`.
pub fn duration_ms(ms: u64) -> String {
    let s = ms / 1000;
    if s < 60 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if s < 3600 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        format!("{}h {:02}m {:02}s", s / 3600, s / 60 % 60, s % 60)
    }
}

/// `n` with the noun in the right number: `count(1, "day")` is `1 day`, `count(2, "day")` is
/// `2 days`; nouns whose plural is not `+s` are given as `singular|plural` (`directory|directories`).
pub fn count(n: impl Into<u64>, noun: &str) -> String {
    let n = n.into();
    let (one, many) = match noun.split_once('|') {
        Some((a, b)) => (a.to_string(), b.to_string()),
        None => (noun.to_string(), format!("{noun}s")),
    };
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Prints rows as an aligned table.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect();
        out_line(s.join("  ").trim_end());
    };
    line(header.iter().map(|s| s.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

/// The progress line before the total is known: no bar, no total.
pub const BAR_COUNTING: &str =
    "{prefix} [{elapsed_precise}] {spinner} {bytes} {bytes_per_sec} {msg}";
/// The progress line once the total is known.
pub const BAR_SIZED: &str =
    "{prefix} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}";

/// A progress bar on stderr fed from `progress`, if stderr is a terminal and output is for people.
pub struct Bar {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Bar {
    /// True if a bar asked for with `enabled` is drawn (stderr is a terminal).
    pub fn shows(enabled: bool) -> bool {
        enabled && std::io::stderr().is_terminal()
    }

    /// The counters for an operation whose bar is `enabled`: unwatched when no bar is drawn, so
    /// the operation skips work that only feeds the display.
    pub fn progress(enabled: bool) -> Arc<Progress> {
        Arc::new(if Bar::shows(enabled) {
            Progress::default()
        } else {
            Progress::unwatched()
        })
    }

    pub fn start(progress: Arc<Progress>, label: &'static str, enabled: bool) -> Bar {
        let stop = Arc::new(AtomicBool::new(false));
        if !Bar::shows(enabled) {
            return Bar { stop, handle: None };
        }
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let bar = indicatif::ProgressBar::new(0);
            let style =
                |t: &str| indicatif::ProgressStyle::with_template(t).expect("valid template");
            // Until the total is known, a spinner: a bar of length 0 would draw full at "0 B/0 B".
            bar.set_style(style(BAR_COUNTING));
            bar.set_prefix(label);
            let mut sized = false;
            while !s.load(Ordering::Relaxed) {
                let snap = progress.snapshot();
                if !sized && snap.bytes_total > 0 {
                    bar.set_style(style(BAR_SIZED));
                    sized = true;
                }
                bar.tick();
                bar.set_length(snap.bytes_total.max(snap.bytes_done));
                bar.set_position(snap.bytes_done);
                bar.set_message(count(snap.files_done, "file"));
                std::thread::sleep(Duration::from_millis(100));
            }
            bar.finish_and_clear();
        });
        Bar {
            stop,
            handle: Some(handle),
        }
    }

    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_counts() {
        assert_eq!(duration_ms(0), "0.0s");
        assert_eq!(duration_ms(4_200), "4.2s");
        assert_eq!(duration_ms(184_000), "3m 04s");
        assert_eq!(duration_ms(7_384_000), "2h 03m 04s");
        assert_eq!(count(1u64, "day"), "1 day");
        assert_eq!(count(2u64, "day"), "2 days");
        assert_eq!(count(0u64, "symlink"), "0 symlinks");
        assert_eq!(count(1u64, "directory|directories"), "1 directory");
        assert_eq!(count(3u64, "directory|directories"), "3 directories");
    }

    #[test]
    fn the_bar_before_a_total_shows_no_total() {
        assert!(!BAR_COUNTING.contains("total_bytes") && !BAR_COUNTING.contains("bar"));
        assert!(BAR_SIZED.contains("{total_bytes}"));
    }
}
