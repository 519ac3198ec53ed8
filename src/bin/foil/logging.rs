//! Log lines on stderr through `tracing`: how much (`-q`, `-v`, `-vv`, or `RUST_LOG`) and in
//! what shape (`warning: ...`, plain information, `debug <target>: ...`).

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::progress;

/// The filter directives of a verbosity: `-q` (-1) warnings and errors only; by default (0)
/// foil's information too; `-v` (1) foil's debug lines and the libraries' information; `-vv`
/// (2 and more) everything down to foil's trace lines.
pub fn directives(verbosity: i8) -> &'static str {
    match verbosity {
        i8::MIN..=-1 => "warn",
        0 => "warn,foil=info",
        1 => "info,foil=debug",
        2..=i8::MAX => "debug,foil=trace",
    }
}

/// Sends `tracing` events to stderr (above any progress bar): `RUST_LOG`'s directives when
/// it is set and not empty, else those of `verbosity` ([`directives`]).
pub fn init(verbosity: i8) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::builder().parse_lossy(spec),
        _ => EnvFilter::builder().parse_lossy(directives(verbosity)),
    };
    // Fails only when a subscriber is already set (not here: this runs first).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(progress::log_writer)
        .event_format(CliFormat)
        .try_init();
}

/// The shape of a log line: `error: `, `warning: `, nothing (information), or the level and
/// where it comes from (`debug foil::pipeline: `), then the message and fields.
struct CliFormat;

impl<S, N> FormatEvent<S, N> for CliFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        match *meta.level() {
            Level::ERROR => write!(writer, "error: ")?,
            Level::WARN => write!(writer, "warning: ")?,
            Level::INFO => {}
            Level::DEBUG => write!(writer, "debug {}: ", meta.target())?,
            Level::TRACE => write!(writer, "trace {}: ", meta.target())?,
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_verbosity_lets_more_through() {
        assert_eq!(directives(-1), "warn");
        assert_eq!(directives(0), "warn,foil=info");
        assert_eq!(directives(1), "info,foil=debug");
        assert_eq!(directives(3), "debug,foil=trace");
    }
}
