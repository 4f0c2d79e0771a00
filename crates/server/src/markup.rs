//! compat: names and tags are stored without markup, as Cloud Elements
//! stores them: `<a href="...">x</a>` becomes `x`, `<script>` and `<style>`
//! elements disappear with their content. An HTML parser (ammonia, over
//! html5ever) with no tag allowed does the work, never a regex.

/// `text` with every HTML tag removed, as plain text (entities decoded).
pub fn strip(text: &str) -> String {
    // Until nothing changes: decoding `&lt;b&gt;` yields `<b>`, which the
    // next pass removes, so what is stored parses as text alone.
    let mut current = text.to_owned();
    for _ in 0..8 {
        let next = strip_once(&current);
        if next == current {
            break;
        }
        current = next;
    }
    current
}

fn strip_once(text: &str) -> String {
    if !text.contains(['<', '&']) {
        return text.to_owned();
    }
    let cleaned = ammonia::Builder::empty().clean(text).to_string();
    // ammonia serializes text as HTML: undo exactly its text escaping
    // (`&`, U+00A0, `<`, `>`), `&amp;` last.
    cleaned
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::strip;

    #[test]
    fn strips_tags_and_keeps_text() {
        assert_eq!(strip(r#"<a href="https://evil.example">x</a>"#), "x");
        assert_eq!(
            strip("<b>Acme</b> CRM<script>alert(1)</script>"),
            "Acme CRM"
        );
        assert_eq!(strip("R&D < 5 > 3"), "R&D < 5 > 3");
        assert_eq!(strip("Tom &amp; Jerry"), "Tom & Jerry");
        assert_eq!(strip("Tom &amp;amp; Jerry"), "Tom & Jerry");
        assert_eq!(strip("plain"), "plain");
        assert_eq!(strip("<img src=x onerror=alert(1)>"), "");
        assert_eq!(strip("&lt;b&gt;x&lt;/b&gt;"), "x", "encoded markup too");
        assert_eq!(strip("&amp;lt;i&amp;gt;y"), "y");
    }
}
