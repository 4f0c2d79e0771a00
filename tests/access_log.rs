//! The access line of the real binary in both log formats: the default
//! layouts of `tracing-subscriber` (text and JSON), written by the binary's
//! own formatter (`src/access_log.rs`): fields in order, the path escaped
//! as the default formatter escapes it, never the query string.

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;

use common::Binary;

/// A request whose path holds a quote, a backslash and a non-ASCII
/// character, with a secret in its query string; the server's log after a
/// graceful stop.
fn log_of_one_request(format: &str) -> String {
    log_of_one_request_with(format, "info")
}

/// [`log_of_one_request`] with `ELEMENTS_LOG` set to `filter`.
fn log_of_one_request_with(format: &str, filter: &str) -> String {
    let mut logged =
        Binary::serve_with_log_file(&[("ELEMENTS_LOG", filter), ("ELEMENTS_LOG_FORMAT", format)]);
    let address = logged.server.base.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .write_all(
            "GET /elements/api-v2/elements/a\"b\\cé?apiSecret=s3cret-value HTTP/1.1\r\n\
             Host: x\r\nConnection: close\r\n\r\n"
                .as_bytes(),
        )
        .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    assert!(
        response.starts_with(b"HTTP/1.1 404 "),
        "{}",
        String::from_utf8_lossy(&response)
    );
    assert!(logged.server.terminate().success());
    logged.log()
}

fn access_line(log: &str) -> &str {
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("elements::http"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(!log.contains("s3cret-value"), "{log}");
    assert!(!log.contains("apiSecret"), "{log}");
    lines[0]
}

#[test]
fn the_text_access_line_is_the_default_layout() {
    let log = log_of_one_request("text");
    let line = access_line(&log);
    let layout = regex::Regex::new(
        r#"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z  INFO elements::http: request request_id="[A-Za-z0-9_-]{16}" method=GET path="/elements/api-v2/elements/a\\"b\\\\cé" status=404 latency_us=\d+$"#,
    )
    .unwrap();
    assert!(layout.is_match(line), "{line}");
}

#[test]
fn the_json_access_line_is_the_default_layout() {
    let log = log_of_one_request("json");
    let line = access_line(&log);
    let layout = regex::Regex::new(
        r#"^\{"timestamp":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z","level":"INFO","fields":\{"message":"request","request_id":"[A-Za-z0-9_-]{16}","method":"GET","path":"/elements/api-v2/elements/a\\"b\\\\cé","status":404,"latency_us":\d+\},"target":"elements::http"\}$"#,
    )
    .unwrap();
    assert!(layout.is_match(line), "{line}");
    let value: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(
        value["fields"]["path"],
        "/elements/api-v2/elements/a\"b\\cé"
    );
}

#[test]
fn log_directives_turn_the_access_line_off() {
    // The binary writes the line itself (no `tracing` event): the
    // directives must still decide.
    for (format, filter) in [
        ("text", "warn"),
        ("json", "warn"),
        ("text", "info,elements::http=warn"),
    ] {
        let log = log_of_one_request_with(format, filter);
        assert!(!log.contains("elements::http"), "{format} {filter}: {log}");
    }
    // The start-up lines are still there: the log was written.
    let log = log_of_one_request_with("text", "info,elements::http=off");
    assert!(!log.contains("elements::http"), "{log}");
    assert!(log.contains(" INFO "), "{log}");
}
