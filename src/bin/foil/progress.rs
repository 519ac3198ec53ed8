//! What the long commands show while they work, and where log lines go.
//!
//! The crates report each step of a long loop as a [`Tick`] ([`foil::core::progress`]): a
//! training step, a batch scored, an input explained. This module is the sink that draws them:
//!
//! - on a terminal, an indicatif bar per task (`train classifier`, `explain`, `score LPIPS`,
//!   ...): units done / total, flips so far or the last loss, elapsed time and an estimate of
//!   the time left;
//! - elsewhere (a pipe, a log file, a batch job), plain lines: the first of each task, then at
//!   most one every few seconds (`FOIL_PROGRESS_INTERVAL`, seconds, default
//!   [`DEFAULT_INTERVAL`]; 0 prints every step), and always the last;
//! - nothing with `-q`.
//!
//! Log lines ([`log_writer`]) are written above a bar that is being drawn, so the two never
//! tear each other.

use std::io::{IsTerminal, Write};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use foil::core::progress::{self, Tick};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Seconds between two plain progress lines of one task when stderr is not a terminal.
pub const DEFAULT_INTERVAL: f64 = 5.0;

/// The environment variable that sets the seconds between plain progress lines.
pub const INTERVAL_VAR: &str = "FOIL_PROGRESS_INTERVAL";

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Style {
    /// indicatif bars on stderr (a terminal).
    Bars,
    /// Plain lines on stderr, at most one per `every` per task (besides its first and last).
    Lines {
        /// The least time between two lines of a task.
        every: Duration,
    },
    /// Nothing (`-q`).
    Off,
}

impl Style {
    /// Bars when stderr is a terminal, else plain lines (every `FOIL_PROGRESS_INTERVAL`
    /// seconds); nothing when `quiet`.
    pub fn pick(quiet: bool) -> Self {
        if quiet {
            return Self::Off;
        }
        if std::io::stderr().is_terminal() {
            return Self::Bars;
        }
        let seconds = std::env::var(INTERVAL_VAR)
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .unwrap_or(DEFAULT_INTERVAL);
        Self::Lines {
            every: Duration::from_secs_f64(seconds),
        }
    }
}

/// The task being shown.
struct Task {
    /// Its name ([`Tick::task`]).
    name: String,
    /// Its total.
    total: usize,
    /// The count of its last tick.
    done: usize,
    /// The count of its first tick (a resumed loop starts above 0).
    first_done: usize,
    /// When its first tick arrived.
    start: Instant,
    /// The bar ([`Style::Bars`]).
    bar: Option<ProgressBar>,
    /// When its last plain line was written and at which count ([`Style::Lines`]).
    last_line: Option<(Instant, usize)>,
    /// Its latest state as a plain line.
    line: String,
}

/// The sink's state: the style and the current task.
struct Renderer {
    style: Style,
    task: Mutex<Option<Task>>,
}

static RENDERER: OnceLock<Renderer> = OnceLock::new();

impl Renderer {
    fn task(&self) -> MutexGuard<'_, Option<Task>> {
        self.task.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Draws `tick`: starts a new task when the name or total changes or the count goes
    /// back, then updates its bar or writes a line when one is due.
    fn tick(&self, tick: &Tick<'_>) {
        if self.style == Style::Off {
            return;
        }
        let mut slot = self.task();
        let same = slot
            .as_ref()
            .is_some_and(|t| t.name == tick.task && t.total == tick.total && tick.done >= t.done);
        if !same {
            if let Some(old) = slot.take() {
                finish(old);
            }
            *slot = Some(self.start(tick));
        }
        let Some(task) = slot.as_mut() else {
            return;
        };
        task.done = tick.done;
        task.line = format!(
            "{} [{}/{}] {}{}",
            tick.task,
            tick.done,
            tick.total,
            tick.unit,
            status(task, tick, true)
        );
        match (&self.style, &task.bar) {
            (Style::Bars, Some(bar)) => {
                bar.set_position(tick.done as u64);
                bar.set_message(status(task, tick, false));
            }
            (Style::Lines { every }, _) => {
                let now = Instant::now();
                let due = match task.last_line {
                    None => true,
                    Some((_, at)) if at == tick.done => false,
                    Some(_) if tick.done >= tick.total => true,
                    Some((when, _)) => now.duration_since(when) >= *every,
                };
                if due {
                    task.last_line = Some((now, tick.done));
                    write_line(&task.line);
                }
            }
            _ => {}
        }
        if tick.done >= tick.total
            && let Some(done) = slot.take()
        {
            finish(done);
        }
    }

    /// A new task from its first tick.
    fn start(&self, tick: &Tick<'_>) -> Task {
        let bar = (self.style == Style::Bars).then(|| {
            let template = format!(
                "{{prefix}} {{wide_bar}} {{pos}}/{{len}} {}, {{elapsed}}{{msg}}",
                tick.unit.replace(['{', '}'], "")
            );
            let bar = ProgressBar::with_draw_target(
                Some(tick.total as u64),
                ProgressDrawTarget::stderr(),
            );
            if let Ok(style) = ProgressStyle::with_template(&template) {
                bar.set_style(style);
            }
            let bar = match tick.seconds {
                Some(s) if s.is_finite() && s >= 0.0 => {
                    bar.with_elapsed(Duration::from_secs_f64(s))
                }
                _ => bar,
            };
            bar.set_prefix(tick.task.to_string());
            bar.set_position(tick.done as u64);
            // Redrawn between ticks too, so the elapsed time moves during a long step.
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        });
        Task {
            name: tick.task.to_string(),
            total: tick.total,
            done: tick.done,
            first_done: tick.done,
            start: Instant::now(),
            bar,
            last_line: None,
            line: String::new(),
        }
    }
}

/// Ends a task (done, or left where a new task or an error stopped it): its bar is replaced
/// by its last line; without a bar, the last line is written unless it already was.
fn finish(task: Task) {
    match task.bar {
        Some(bar) => {
            bar.finish_and_clear();
            write_line(&task.line);
        }
        None => {
            if task.last_line.is_some_and(|(_, at)| at != task.done) {
                write_line(&task.line);
            }
        }
    }
}

/// One line on stderr.
fn write_line(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// The part of a task's line after the count: flips, loss, elapsed time (when `elapsed`; a
/// bar shows its own), time left, note.
fn status(task: &Task, tick: &Tick<'_>, elapsed_shown: bool) -> String {
    // The loop's own clock counts from its first unit; the sink's from the first tick.
    let (elapsed, base) = match tick.seconds {
        Some(s) => (s, 0),
        None => (task.start.elapsed().as_secs_f64(), task.first_done),
    };
    let mut parts = Vec::new();
    if let Some(flipped) = tick.flipped {
        parts.push(format!("{flipped} flipped"));
    }
    if let Some(loss) = tick.loss {
        parts.push(format!("loss {loss:.4}"));
    }
    if elapsed_shown {
        parts.push(clock(elapsed));
    }
    let rate_done = tick.done.saturating_sub(base);
    if rate_done > 0 && tick.done < tick.total && elapsed > 0.0 {
        let left = elapsed / rate_done as f64 * (tick.total - tick.done) as f64;
        parts.push(format!("ETA {}", clock(left)));
    }
    let mut s = if parts.is_empty() {
        String::new()
    } else {
        format!(", {}", parts.join(", "))
    };
    if let Some(note) = tick.note {
        s.push_str(&format!(" ({note})"));
    }
    s
}

/// `12.3 s`, `4m05s`, `2h03m`.
fn clock(seconds: f64) -> String {
    let s = seconds.max(0.0);
    if s < 60.0 {
        format!("{s:.1} s")
    } else if s < 3600.0 {
        let whole = s.round() as u64;
        format!("{}m{:02}s", whole / 60, whole % 60)
    } else {
        let minutes = (s / 60.0).round() as u64;
        format!("{}h{:02}m", minutes / 60, minutes % 60)
    }
}

/// Shows every later [`progress::report`] of the process in `style`. Call once, first thing.
pub fn install(style: Style) {
    let renderer = RENDERER.get_or_init(|| Renderer {
        style,
        task: Mutex::new(None),
    });
    // A sink even when off: it keeps the pipelines from printing their own lines.
    progress::set_sink(move |t: &Tick<'_>| renderer.tick(t));
}

/// Leaves the current bar where it is (before the final error line).
pub fn finish_all() {
    if let Some(r) = RENDERER.get()
        && let Some(task) = r.task().take()
    {
        finish(task);
    }
}

/// Runs `f` with the current bar (if any) cleared from the terminal, then draws it again.
pub fn suspend<R>(f: impl FnOnce() -> R) -> R {
    let bar = RENDERER
        .get()
        .and_then(|r| r.task().as_ref().and_then(|t| t.bar.clone()));
    match bar {
        Some(bar) if !bar.is_finished() => bar.suspend(f),
        _ => f(),
    }
}

/// Where `tracing` writes: stderr, above the bar being drawn.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        suspend(|| std::io::stderr().lock().write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// The writer for `tracing_subscriber::fmt().with_writer(..)`.
pub fn log_writer() -> LogWriter {
    LogWriter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_reads_like_a_person_would_write_it() {
        assert_eq!(clock(3.21), "3.2 s");
        assert_eq!(clock(245.0), "4m05s");
        assert_eq!(clock(7380.0), "2h03m");
        assert_eq!(clock(-1.0), "0.0 s");
    }

    #[test]
    fn status_has_flips_loss_time_left_and_note() {
        let task = Task {
            name: "explain".into(),
            total: 4,
            done: 1,
            first_done: 0,
            start: Instant::now(),
            bar: None,
            last_line: None,
            line: String::new(),
        };
        let tick = Tick {
            flipped: Some(1),
            note: Some("a.png: flipped"),
            seconds: Some(2.0),
            ..Tick::new("explain", "inputs", 1, 4)
        };
        assert_eq!(
            status(&task, &tick, true),
            ", 1 flipped, 2.0 s, ETA 6.0 s (a.png: flipped)"
        );
        let last = Tick {
            loss: Some(0.5),
            ..Tick::new("train ddpm", "steps", 4, 4)
        };
        let s = status(&task, &last, true);
        assert!(s.starts_with(", loss 0.5000, "), "{s}");
        assert!(!s.contains("ETA"), "{s}");
    }
}
