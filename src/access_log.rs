//! The log line formats: exactly `tracing-subscriber`'s default text
//! (`Full`) and JSON layouts, written without the `core::fmt` machinery
//! where the default formatter uses it (issue 19).
//!
//! Every request logs one access line, so formatting it is part of every
//! route's cost: with the default formatter it was about 3.5 µs of the 20
//! µs a `GET /credentials` costs. The default formatter builds the
//! timestamp with seven `write!`s, and each field with `write!(w,
//! "{}={:?}")` (`<str as Debug>::fmt` walking every character, integers
//! through `Debug`). [`Text`] and [`Json`] write the same bytes directly:
//! the timestamp's date and time of day are computed once a second (per
//! thread), strings that need no escaping are copied as they are, integers
//! are written with `itoa`. One access line (dispatch, filter, format and
//! the copy into `log_writer`'s buffer; thread CPU time in-process) went
//! from 765 to 315 ns in text and from 1,325 to 405 ns in JSON; its share
//! of a `GET /credentials` profile from 7.5% to 4.3% of the samples.
//!
//! Every event goes through these formatters. The access line itself now
//! skips the event in the binary ([`Direct`], an
//! `elements_server::access_line::Sink`): handing its six values one by one
//! through `Visit` was most of what was left of its cost; written
//! directly it went from 5.1% to 3.3% of an `oauth/url` profile (~0.55 to
//! ~0.32 µs, issue 19, BENCHMARKS.md). The event stays the default for
//! anyone embedding the server crate, `ELEMENTS_LOG` directives still
//! decide (`tracing::enabled!`), and the bytes are the same
//! (`tests::direct_*`).
//!
//! **The output does not change**: what operators' log parsers see is the
//! default layout, byte for byte (`tests::identity_*` format the same
//! events with both and compare). Where the layout involves more than
//! plain fields the default formatter itself writes the line: an event
//! inside a span that the log shows, an event from the `log` crate, a
//! terminal's colours, an error value (its source chain); and inside a line
//! any string that needs escaping is escaped by the code the default
//! formatter uses (`{:?}` of a `str`, `serde_json`).

use std::cell::{Cell, RefCell};
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use elements_server::access_line::{self, AccessLine};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::field::VisitOutput as _;
use tracing_subscriber::fmt::format::{
    self, DefaultFields, DefaultVisitor, Format, JsonFields, Writer,
};
use tracing_subscriber::fmt::time::FormatTime as _;
use tracing_subscriber::fmt::{FmtContext, FormatEvent};
use tracing_subscriber::registry::LookupSpan;

/// `tracing_subscriber::fmt()`'s default text layout:
/// `2026-11-27T17:09:10.123456Z  INFO elements::http: request request_id="…" method=GET …`.
/// Use it with the default field formatter ([`DefaultFields`]).
#[derive(Default)]
pub struct Text {
    default: Format,
}

/// The layout of `tracing_subscriber::fmt().json()`:
/// `{"timestamp":"…","level":"INFO","fields":{"message":"request",…},"target":"elements::http"}`.
/// Use it with [`JsonFields`] (what `.json()` sets) and without ANSI colours.
pub struct Json {
    default: Format<format::Json>,
}

impl Default for Json {
    fn default() -> Self {
        Json {
            default: format().json(),
        }
    }
}

fn format() -> Format {
    tracing_subscriber::fmt::format()
}

impl<S> FormatEvent<S, DefaultFields> for Text
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, DefaultFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let spans_shown = ctx
            .event_scope()
            .is_some_and(|scope| scope.from_root().next().is_some());
        if writer.has_ansi_escapes()
            || !writer.sanitizes_ansi_escapes()
            || spans_shown
            || from_log(event)
        {
            return self.default.format_event(ctx, writer, event);
        }
        let meta = event.metadata();
        timestamp(&mut writer)?;
        writer.write_str(" ")?;
        writer.write_str(match *meta.level() {
            Level::TRACE => "TRACE ",
            Level::DEBUG => "DEBUG ",
            Level::INFO => " INFO ",
            Level::WARN => " WARN ",
            Level::ERROR => "ERROR ",
        })?;
        writer.write_str(meta.target())?;
        writer.write_str(": ")?;
        let mut fields = TextFields {
            writer: writer.by_ref(),
            is_empty: true,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_str("\n")
    }
}

impl<S> FormatEvent<S, JsonFields> for Json
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // The default formatter adds "span" and "spans" when this is Some.
        let current_span = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current());
        if current_span.is_some() || from_log(event) {
            return self.default.format_event(ctx, writer, event);
        }
        let meta = event.metadata();
        writer.write_str("{\"timestamp\":\"")?;
        timestamp(&mut writer)?;
        writer.write_str(match *meta.level() {
            Level::TRACE => "\",\"level\":\"TRACE\",\"fields\":{",
            Level::DEBUG => "\",\"level\":\"DEBUG\",\"fields\":{",
            Level::INFO => "\",\"level\":\"INFO\",\"fields\":{",
            Level::WARN => "\",\"level\":\"WARN\",\"fields\":{",
            Level::ERROR => "\",\"level\":\"ERROR\",\"fields\":{",
        })?;
        let mut fields = JsonFieldsVisitor {
            writer: writer.by_ref(),
            first: true,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_str("},\"target\":")?;
        json_string(&mut writer, meta.target())?;
        writer.write_str("}\n")
    }
}

/// The access line written straight into the log buffer: the server's
/// [`access_line::Sink`], installed by the binary when its output has no
/// colours. The line is byte for byte what [`Text`] or [`Json`] write for
/// the `tracing` event it replaces (`tests::direct_*` compare them), minus
/// the event's dispatch and the field-by-field `Visit` (issue 19).
pub struct Direct<W: std::io::Write + Send + 'static> {
    writer: crate::log_writer::LogWriter<W>,
    json: bool,
}

impl<W: std::io::Write + Send + 'static> Direct<W> {
    /// Lines in the JSON layout when `json`, else in the text one.
    pub fn new(writer: crate::log_writer::LogWriter<W>, json: bool) -> Self {
        Direct { writer, json }
    }
}

thread_local! {
    /// The line being written on this thread (its capacity is kept).
    static LINE: RefCell<String> = const { RefCell::new(String::new()) };
}

impl<W: std::io::Write + Send + 'static> access_line::Sink for Direct<W> {
    fn write(&self, line: &AccessLine<'_>) {
        use std::io::Write as _;
        use tracing_subscriber::fmt::MakeWriter as _;
        LINE.with_borrow_mut(|buffer| {
            buffer.clear();
            let mut writer = Writer::new(buffer);
            let written = if self.json {
                json_line(&mut writer, line)
            } else {
                text_line(&mut writer, line)
            };
            if written.is_ok() {
                // The log buffer takes the line whole, or writes it out.
                let _ = self.writer.make_writer().write_all(buffer.as_bytes());
            }
        });
    }
}

/// The access line in [`Text`]'s layout.
fn text_line(writer: &mut Writer<'_>, line: &AccessLine<'_>) -> fmt::Result {
    timestamp(writer)?;
    writer.write_str("  INFO elements::http: request request_id=")?;
    debug_str(writer, line.request_id)?;
    // `%method`: its `Display`, a token (no character to escape).
    writer.write_str(" method=")?;
    writer.write_str(line.method.as_str())?;
    writer.write_str(" path=")?;
    debug_str(writer, line.path)?;
    writer.write_str(" status=")?;
    writer.write_str(itoa::Buffer::new().format(line.status))?;
    writer.write_str(" latency_us=")?;
    writer.write_str(itoa::Buffer::new().format(line.latency_us))?;
    writer.write_str("\n")
}

/// The access line in [`Json`]'s layout.
fn json_line(writer: &mut Writer<'_>, line: &AccessLine<'_>) -> fmt::Result {
    writer.write_str("{\"timestamp\":\"")?;
    timestamp(writer)?;
    writer
        .write_str("\",\"level\":\"INFO\",\"fields\":{\"message\":\"request\",\"request_id\":")?;
    json_string(writer, line.request_id)?;
    writer.write_str(",\"method\":")?;
    json_string(writer, line.method.as_str())?;
    writer.write_str(",\"path\":")?;
    json_string(writer, line.path)?;
    writer.write_str(",\"status\":")?;
    writer.write_str(itoa::Buffer::new().format(line.status))?;
    writer.write_str(",\"latency_us\":")?;
    writer.write_str(itoa::Buffer::new().format(line.latency_us))?;
    writer.write_str("},\"target\":\"elements::http\"}\n")
}

/// An event of the `log` crate (through `tracing-log`): the default
/// formatter shows its `log.target` as the target and hides its `log.*`
/// fields.
fn from_log(event: &Event<'_>) -> bool {
    event.metadata().fields().field("log.target").is_some()
}

/// After the year 9999 the default formatter widens the year: leave those
/// (and clocks before 1970) to it.
const YEAR_10000: u64 = 253_402_300_800;

thread_local! {
    /// The second last formatted on this thread and its
    /// `YYYY-MM-DDTHH:MM:SS`.
    static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
}

/// The default timer's timestamp (`tracing_subscriber::fmt::time::SystemTime`):
/// UTC, microseconds, `2026-11-27T17:09:10.123456Z`.
fn timestamp(writer: &mut Writer<'_>) -> fmt::Result {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(since) if since.as_secs() < YEAR_10000 => {
            write_timestamp(writer, since.as_secs(), since.subsec_micros())
        }
        _ => tracing_subscriber::fmt::time::SystemTime.format_time(writer),
    }
}

fn write_timestamp(writer: &mut Writer<'_>, secs: u64, micros: u32) -> fmt::Result {
    let (cached, mut prefix) = SECOND.get();
    if cached != secs {
        prefix = date_time(secs);
        SECOND.set((secs, prefix));
    }
    let mut tail = *b".000000Z";
    let mut rest = micros;
    for digit in tail[1..7].iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    // Both are ASCII digits and punctuation.
    writer.write_str(std::str::from_utf8(&prefix).map_err(|_| fmt::Error)?)?;
    writer.write_str(std::str::from_utf8(&tail).map_err(|_| fmt::Error)?)
}

/// `YYYY-MM-DDTHH:MM:SS` of a second since 1970 before the year 10000.
fn date_time(secs: u64) -> [u8; 19] {
    let at = i64::try_from(secs)
        .ok()
        .and_then(|secs| time::OffsetDateTime::from_unix_timestamp(secs).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let mut out = *b"0000-00-00T00:00:00";
    let put = |out: &mut [u8; 19], at: usize, width: usize, mut value: u32| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(&mut out, 0, 4, at.year().unsigned_abs());
    put(&mut out, 5, 2, u32::from(u8::from(at.month())));
    put(&mut out, 8, 2, u32::from(at.day()));
    put(&mut out, 11, 2, u32::from(at.hour()));
    put(&mut out, 14, 2, u32::from(at.minute()));
    put(&mut out, 17, 2, u32::from(at.second()));
    out
}

/// The fields as `DefaultFields` writes them (`DefaultVisitor`): separated
/// by a space, the message bare (terminal escapes made visible), others as
/// `name=value` with `{:?}` values; `log.*` fields skipped, `r#` dropped.
struct TextFields<'a> {
    writer: Writer<'a>,
    is_empty: bool,
    result: fmt::Result,
}

/// What [`TextFields::begin`] found.
enum Part {
    /// A `log.*` field (or an earlier error): write nothing.
    Skip,
    /// The message: its value alone.
    Message,
    /// `name=` is written: the value follows.
    Value,
}

impl TextFields<'_> {
    fn begin(&mut self, field: &Field) -> Part {
        if self.result.is_err() {
            return Part::Skip;
        }
        let name = field.name();
        if name.starts_with("log.") {
            return Part::Skip;
        }
        if self.is_empty {
            self.is_empty = false;
        } else if let Err(e) = self.writer.write_str(" ") {
            self.result = Err(e);
            return Part::Skip;
        }
        if name == "message" {
            return Part::Message;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        self.result = self
            .writer
            .write_str(name)
            .and_then(|()| self.writer.write_str("="));
        if self.result.is_err() {
            return Part::Skip;
        }
        Part::Value
    }

    fn integer(&mut self, field: &Field, value: impl itoa::Integer) {
        match self.begin(field) {
            Part::Skip => {}
            Part::Message | Part::Value => {
                self.result = self.writer.write_str(itoa::Buffer::new().format(value));
            }
        }
    }
}

impl Visit for TextFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.result = match self.begin(field) {
            Part::Skip => return,
            Part::Message => AnsiEscaping(&mut self.writer).write_str(value),
            Part::Value => debug_str(&mut self.writer, value),
        };
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.integer(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.integer(field, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.result = match self.begin(field) {
            Part::Skip => return,
            Part::Message | Part::Value => {
                self.writer.write_str(if value { "true" } else { "false" })
            }
        };
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // The source chain and its markers: the default visitor's own code.
        if self.result.is_err() {
            return;
        }
        let mut default = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        default.record_error(field, value);
        self.result = default.finish();
        if !field.name().starts_with("log.") {
            self.is_empty = false;
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.result = match self.begin(field) {
            Part::Skip => return,
            Part::Message => write!(AnsiEscaping(&mut self.writer), "{value:?}"),
            Part::Value => write!(self.writer, "{value:?}"),
        };
    }
}

/// `{:?}` of a string: as it is between quotes when no character needs
/// escaping (printable ASCII other than `"` and `\`), else `str`'s `Debug`.
fn debug_str(writer: &mut Writer<'_>, value: &str) -> fmt::Result {
    if value
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        writer.write_str("\"")?;
        writer.write_str(value)?;
        writer.write_str("\"")
    } else {
        write!(writer, "{value:?}")
    }
}

/// The default formatter's escaping of a message (`EscapeGuard`): terminal
/// control characters written as visible escapes.
struct AnsiEscaping<'a, 'b>(&'a mut Writer<'b>);

impl fmt::Write for AnsiEscaping<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // 0xc2 leads the UTF-8 of U+0080..U+00BF, which holds the C1 controls.
        if !s
            .bytes()
            .any(|b| matches!(b, 0x1b | 0x07 | 0x08 | 0x0c | 0x7f | 0xc2))
        {
            return self.0.write_str(s);
        }
        for ch in s.chars() {
            match ch {
                '\x1b' => self.0.write_str("\\x1b")?,
                '\x07' => self.0.write_str("\\x07")?,
                '\x08' => self.0.write_str("\\x08")?,
                '\x0c' => self.0.write_str("\\x0c")?,
                '\x7f' => self.0.write_str("\\x7f")?,
                ch if ('\u{80}'..='\u{9f}').contains(&ch) => {
                    write!(self.0, "\\u{{{:x}}}", ch as u32)?
                }
                _ => self.0.write_char(ch)?,
            }
        }
        Ok(())
    }
}

/// The fields as `tracing-serde` writes them into the `"fields"` object:
/// in order, strings and `{:?}` values as JSON strings, numbers and
/// booleans as themselves.
struct JsonFieldsVisitor<'a> {
    writer: Writer<'a>,
    first: bool,
    result: fmt::Result,
}

impl JsonFieldsVisitor<'_> {
    /// `"name":`, after a comma unless first; false after an error.
    fn key(&mut self, field: &Field) -> bool {
        if self.result.is_err() {
            return false;
        }
        let comma = if self.first {
            Ok(())
        } else {
            self.writer.write_str(",")
        };
        self.first = false;
        self.result = comma
            .and_then(|()| json_string(&mut self.writer, field.name()))
            .and_then(|()| self.writer.write_str(":"));
        self.result.is_ok()
    }

    fn integer(&mut self, field: &Field, value: impl itoa::Integer) {
        if self.key(field) {
            self.result = self.writer.write_str(itoa::Buffer::new().format(value));
        }
    }
}

impl Visit for JsonFieldsVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.key(field) {
            self.result = json_string(&mut self.writer, value);
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.integer(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.integer(field, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.key(field) {
            self.result = self.writer.write_str(if value { "true" } else { "false" });
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.key(field) {
            // serde_json's own number format (`null` when not finite).
            self.result = serde_json::to_string(&value)
                .map_err(|_| fmt::Error)
                .and_then(|number| self.writer.write_str(&number));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.key(field) {
            self.result = self
                .writer
                .write_str("\"")
                .and_then(|()| write!(JsonEscaping(&mut self.writer), "{value:?}"))
                .and_then(|()| self.writer.write_str("\""));
        }
    }
}

/// A JSON string of `value`, escaped as `serde_json` escapes it.
fn json_string(writer: &mut Writer<'_>, value: &str) -> fmt::Result {
    writer.write_str("\"")?;
    JsonEscaping(writer).write_str(value)?;
    writer.write_str("\"")
}

/// Writes a JSON string's contents: as they are when nothing needs escaping
/// (no `"`, `\` or control character), else escaped by `serde_json`.
struct JsonEscaping<'a, 'b>(&'a mut Writer<'b>);

impl fmt::Write for JsonEscaping<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
            return self.0.write_str(s);
        }
        let quoted = serde_json::to_string(s).map_err(|_| fmt::Error)?;
        self.0.write_str(&quoted[1..quoted.len() - 1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;

    /// An in-memory log output.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    impl Buffer {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// An error with a source, as the store and provider errors are.
    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("store failed: \"disk\"")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    /// The events the identity tests log, each as the server logs its
    /// own: the access line, awkward paths, errors, spans, every kind of
    /// field value.
    fn events() {
        let method = axum::http::Method::GET;
        let awkward = [
            "/elements/api-v2/instances/42/credentials",
            "/a \"quoted\" \\ back\\slash\nnew line\ttab\r",
            "/non-ascii/é/東京/😀/combining\u{301}/zero\u{200b}width",
            "/controls/\u{1b}[31m/\u{7}/\u{7f}/\u{85}/\u{9b}/\u{0}",
            "",
        ];
        for path in awkward {
            tracing::info!(
                target: "elements::http",
                request_id = "AbCdEfGhIjKlMnOp",
                %method,
                path,
                status = 200u16,
                latency_us = 1234u64,
                "request"
            );
            // As request_id.rs logs it: the same line.
            tracing::info!(
                target: "elements::http",
                message = "request",
                request_id = "AbCdEfGhIjKlMnOp",
                %method,
                path,
                status = 200u16,
                latency_us = 1234u64,
            );
        }
        let io = std::io::Error::other("no space left on device");
        let error = Outer(std::io::Error::other("inner \"cause\"\nsecond line"));
        tracing::warn!(
            error = &error as &dyn std::error::Error,
            "provider refresh failed"
        );
        tracing::warn!(
            error = &io as &dyn std::error::Error,
            instance = 42u64,
            "plain error"
        );
        tracing::error!(error = %error, "display of an error");
        tracing::warn!(reason = ?error, "debug of an error");
        tracing::info!("a message with \u{1b}[2J escapes and \"quotes\" \u{90}");
        tracing::info!(message = "message as a field \u{1b}", after = 1);
        tracing::info!(count = 3, "formatted {} message {:?}", "args", "quoted");
        tracing::debug!(
            r#type = "raw",
            negative = -17i64,
            max = u64::MAX,
            min = i64::MIN,
            yes = true,
            no = false,
            ratio = 0.25f64,
            nan = f64::NAN,
            inf = f64::INFINITY,
            big = 1e300f64,
            wide = 1u128 << 100,
            signed_wide = -(1i128 << 100),
            list = ?["a\"b", "c"],
            shown = %"display \"value\"\n",
            "types"
        );
        tracing::trace!(target: "weird target \"x\"\n", empty = "");
        tracing::error!(only = "fields, no message");
        tracing::event!(
            Level::INFO,
            "log.hidden" = "skipped in text",
            kept = 1,
            "log-like field"
        );
        tracing::info!(message = 5u64);
        let span = tracing::info_span!("request", id = 7, path = "/p\"q");
        span.in_scope(|| {
            tracing::info!(inside = true, "inside a span");
            let inner = tracing::debug_span!("store.read", table = "instances");
            inner.in_scope(|| tracing::warn!(error = &io as &dyn std::error::Error, "nested"));
        });
        tracing::info!(parent: &span, "explicit parent");
        let filtered = tracing::trace_span!(target: "elements::otel", "request");
        filtered.in_scope(|| tracing::info!("inside a span the log does not show"));
    }

    /// `ELEMENTS_LOG`-style filter: everything, with the exporter's spans
    /// off as the binary sets it.
    fn filter() -> tracing_subscriber::EnvFilter {
        tracing_subscriber::EnvFilter::new("trace,elements::otel=off")
    }

    fn run(subscriber: impl Subscriber + Send + Sync + 'static) {
        tracing::subscriber::with_default(subscriber, events);
    }

    /// The events [`events`] logs at `trace`.
    const EVENTS: usize = 26;

    /// The output with each line's timestamp replaced, and how many there
    /// were (a line may continue on the next: an error's sources are not
    /// escaped).
    fn normalised(text: &str, json: bool) -> (Vec<String>, usize) {
        let stamp = if json {
            r#"(?m)^\{"timestamp":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z""#
        } else {
            r"(?m)^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z "
        };
        let stamp = regex::Regex::new(stamp).unwrap();
        let count = stamp.find_iter(text).count();
        let text = stamp.replace_all(text, "TIMESTAMP");
        (text.lines().map(str::to_owned).collect(), count)
    }

    fn compare(default: &Buffer, fast: &Buffer, json: bool) {
        let (default, fast) = (default.text(), fast.text());
        let ((default, stamps), (fast, fast_stamps)) =
            (normalised(&default, json), normalised(&fast, json));
        assert_eq!((stamps, fast_stamps), (EVENTS, EVENTS), "{default:#?}");
        for (d, f) in default.iter().zip(&fast) {
            assert_eq!(d, f);
        }
        assert_eq!(default, fast);
    }

    /// The access lines the direct tests write: plain, and paths that
    /// need escaping in either layout.
    fn access_lines() -> Vec<AccessLine<'static>> {
        static METHODS: [axum::http::Method; 3] = [
            axum::http::Method::GET,
            axum::http::Method::POST,
            axum::http::Method::DELETE,
        ];
        [
            "/elements/api-v2/instances/42/credentials",
            "/a \"quoted\" \\ back\\slash\nnew line\ttab\r",
            "/non-ascii/é/東京/😀/combining\u{301}/zero\u{200b}width",
            "/controls/\u{1b}[31m/\u{7}/\u{7f}/\u{85}/\u{9b}/\u{0}",
            "",
        ]
        .into_iter()
        .enumerate()
        .map(|(i, path)| AccessLine {
            request_id: "AbCdEfGhIjKl-_Op",
            method: &METHODS[i % 3],
            path,
            status: [200, 404, 500][i % 3],
            latency_us: [0, 1234, u64::MAX][i % 3],
        })
        .collect()
    }

    /// Each access line through the `tracing` event (no sink is set in
    /// this process: `access_line::log` logs the event) and the default
    /// formatter, and written directly: the same bytes.
    fn direct_matches_the_default(json: bool) {
        let default = Buffer::default();
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter())
            .with_ansi(false)
            .with_writer(default.clone());
        let lines = access_lines();
        let log_all = || lines.iter().for_each(access_line::log);
        if json {
            tracing::subscriber::with_default(builder.json().finish(), log_all);
        } else {
            tracing::subscriber::with_default(builder.finish(), log_all);
        }
        let mut direct = String::new();
        for line in &lines {
            let mut writer = Writer::new(&mut direct);
            if json {
                json_line(&mut writer, line).unwrap();
            } else {
                text_line(&mut writer, line).unwrap();
            }
        }
        let (default, count) = normalised(&default.text(), json);
        let (direct, direct_count) = normalised(&direct, json);
        assert_eq!((count, direct_count), (lines.len(), lines.len()));
        for (d, f) in default.iter().zip(&direct) {
            assert_eq!(d, f);
        }
        assert_eq!(default, direct);
    }

    #[test]
    fn direct_text_is_the_default_layout() {
        direct_matches_the_default(false);
    }

    #[test]
    fn direct_json_is_the_default_layout() {
        direct_matches_the_default(true);
    }

    #[test]
    fn the_direct_sink_writes_whole_lines_to_the_log_writer() {
        use access_line::Sink as _;
        let out = Buffer::default();
        let (writer, guard) = crate::log_writer::new(out.clone());
        let sink = Direct::new(writer, false);
        for line in access_lines() {
            sink.write(&line);
        }
        drop(guard);
        let mut expected = String::new();
        for line in access_lines() {
            text_line(&mut Writer::new(&mut expected), &line).unwrap();
        }
        assert_eq!(normalised(&out.text(), false), normalised(&expected, false));
    }

    #[test]
    fn identity_text() {
        let (default, fast) = (Buffer::default(), Buffer::default());
        run(tracing_subscriber::fmt()
            .with_env_filter(filter())
            .with_ansi(false)
            .with_writer(default.clone())
            .finish());
        run(tracing_subscriber::fmt()
            .with_env_filter(filter())
            .with_ansi(false)
            .with_writer(fast.clone())
            .event_format(Text::default())
            .finish());
        compare(&default, &fast, false);
        let text = fast.text();
        // Both forms of the access line (format string, `message` field).
        let access = " INFO elements::http: request request_id=\"AbCdEfGhIjKlMnOp\" method=GET \
             path=\"/elements/api-v2/instances/42/credentials\" status=200 latency_us=1234\n";
        assert_eq!(text.matches(access).count(), 2, "{text}");
        assert!(text.contains(r#"path="/a \"quoted\" \\ back\\slash\nnew line\ttab\r""#));
    }

    #[test]
    fn identity_text_with_colours_is_the_default_formatters() {
        let (default, fast) = (Buffer::default(), Buffer::default());
        run(tracing_subscriber::fmt()
            .with_env_filter(filter())
            .with_ansi(true)
            .with_writer(default.clone())
            .finish());
        run(tracing_subscriber::fmt()
            .with_env_filter(filter())
            .with_ansi(true)
            .with_writer(fast.clone())
            .event_format(Text::default())
            .finish());
        let strip = regex::Regex::new(r"^(\x1b\[2m)?[^ \x1b]+").unwrap();
        let cut = |text: String| -> Vec<String> {
            text.lines()
                .map(|l| strip.replace(l, "TIMESTAMP").into_owned())
                .collect()
        };
        let (default, fast) = (cut(default.text()), cut(fast.text()));
        assert!(default.iter().any(|l| l.contains("\u{1b}[32m INFO")));
        assert_eq!(default, fast);
    }

    #[test]
    fn identity_json() {
        let (default, fast) = (Buffer::default(), Buffer::default());
        run(tracing_subscriber::fmt()
            .with_env_filter(filter())
            .with_writer(default.clone())
            .json()
            .finish());
        run(tracing_subscriber::fmt()
            .with_env_filter(filter())
            .with_ansi(false)
            .with_writer(fast.clone())
            .fmt_fields(JsonFields::new())
            .event_format(Json::default())
            .finish());
        compare(&default, &fast, true);
        let text = fast.text();
        let access = "\"level\":\"INFO\",\"fields\":{\"message\":\"request\",\"request_id\":\"AbCdEfGhIjKlMnOp\",\
             \"method\":\"GET\",\"path\":\"/elements/api-v2/instances/42/credentials\",\"status\":200,\
             \"latency_us\":1234},\"target\":\"elements::http\"}\n";
        assert_eq!(text.matches(access).count(), 2, "{text}");
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
    }

    /// The identity tests run through the subscriber's own writer; this one
    /// through the binary's log writer, as `serve` sets it up.
    #[test]
    fn the_log_writer_receives_whole_lines() {
        let out = Buffer::default();
        let (writer, guard) = crate::log_writer::new(out.clone());
        run(tracing_subscriber::fmt()
            .with_env_filter(filter())
            .with_ansi(false)
            .with_writer(writer)
            .event_format(Text::default())
            .finish());
        drop(guard);
        assert_eq!(normalised(&out.text(), false).1, EVENTS);
    }

    fn stamp(secs: u64, micros: u32) -> String {
        let mut out = String::new();
        write_timestamp(&mut Writer::new(&mut out), secs, micros).unwrap();
        out
    }

    #[test]
    fn timestamps_are_utc_with_microseconds() {
        assert_eq!(stamp(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(stamp(1_795_799_350, 42), "2026-11-27T17:09:10.000042Z");
        // The cached second is replaced when the second changes, in both
        // directions.
        assert_eq!(stamp(1_795_799_351, 999_999), "2026-11-27T17:09:11.999999Z");
        assert_eq!(stamp(1_795_799_350, 100_000), "2026-11-27T17:09:10.100000Z");
        assert_eq!(stamp(951_782_400, 5), "2000-02-29T00:00:00.000005Z");
        assert_eq!(stamp(YEAR_10000 - 1, 0), "9999-12-31T23:59:59.000000Z");
        assert_eq!(stamp(4_102_444_800 - 1, 7), "2099-12-31T23:59:59.000007Z");
    }

    #[test]
    fn the_timestamp_matches_the_default_timers() {
        // Formatted one after the other: the same second (retried if a
        // second ended in between).
        let seconds = |stamp: &str| stamp[..19].to_owned();
        let same = (0..3).any(|_| {
            let mut ours = String::new();
            timestamp(&mut Writer::new(&mut ours)).unwrap();
            let mut theirs = String::new();
            tracing_subscriber::fmt::time::SystemTime
                .format_time(&mut Writer::new(&mut theirs))
                .unwrap();
            assert_eq!(ours.len(), theirs.len(), "{ours} {theirs}");
            seconds(&ours) == seconds(&theirs)
        });
        assert!(same);
    }

    #[test]
    fn a_log_crate_event_is_the_default_formatters() {
        // sqlx logs through the `log` crate; `init` installs tracing-log's
        // bridge, whose events name the `log` record's target in a field.
        let _ = tracing_log::LogTracer::init();
        let (default, fast) = (Buffer::default(), Buffer::default());
        let emit = || log::warn!(target: "sqlx::query", "slow statement: \"select\"");
        tracing::subscriber::with_default(
            tracing_subscriber::fmt()
                .with_ansi(false)
                .with_writer(default.clone())
                .finish(),
            emit,
        );
        tracing::subscriber::with_default(
            tracing_subscriber::fmt()
                .with_ansi(false)
                .with_writer(fast.clone())
                .event_format(Text::default())
                .finish(),
            emit,
        );
        assert_eq!(
            normalised(&default.text(), false),
            normalised(&fast.text(), false)
        );
        assert!(
            fast.text()
                .ends_with(" WARN sqlx::query: slow statement: \"select\"\n"),
            "{}",
            fast.text()
        );
    }
}
