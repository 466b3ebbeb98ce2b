//! The log on stderr: level from `$IBS_LOG` (default `warn` for commands, `info` for `ibs serve`),
//! colour only when stderr is a terminal, and `--log-format json` (for `ibs serve`): one JSON
//! object per line, `{"time", "level", "target", "message", …fields}` (ADR 0027).

use std::fmt::Write as _;
use std::io::IsTerminal;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `TIME LEVEL target: message key=value …`, coloured only on a terminal.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber.
pub fn init(default_level: &str, format: LogFormat) {
    // fuser (`ibs repo mount`) logs its own housekeeping at warn (e.g. a second unmount of a
    // mount already gone); only its errors are the operator's business.
    let filter = tracing_subscriber::EnvFilter::try_from_env("IBS_LOG")
        .unwrap_or_else(|_| format!("{default_level},fuser=error").into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.event_format(JsonLine).init(),
    }
}

/// Formats an event as one JSON object.
struct JsonLine;

#[derive(Default)]
struct Fields(serde_json::Map<String, serde_json::Value>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut s = String::new();
        let _ = write!(s, "{value:?}");
        self.0.insert(field.name().into(), s.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
}

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let mut obj = serde_json::Map::new();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        obj.insert(
            "time".into(),
            format!(
                "{}.{:03}Z",
                ibs_repo::clock::rfc3339(now.as_secs() as i64).trim_end_matches('Z'),
                now.subsec_millis()
            )
            .into(),
        );
        obj.insert("level".into(), meta.level().as_str().into());
        obj.insert("target".into(), meta.target().into());
        for (k, v) in fields.0 {
            obj.insert(k, v);
        }
        writeln!(w, "{}", serde_json::Value::Object(obj))
    }
}
