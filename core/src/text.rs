//! Untrusted text made safe to log or to echo back: control characters escaped (a newline in
//! a Redis member must not forge a log line), and cut (a 1 MB value must not make a 1 MB line).

/// `text` with control and non-printing characters escaped as Rust would write them, cut to
/// about `max_chars` characters with how long it really was said.
pub fn loggable(text: &str, max_chars: usize) -> String {
    let mut out = String::new();
    for (shown, c) in text.chars().enumerate() {
        if shown >= max_chars {
            out.push_str(&format!("… ({} bytes in all)", text.len()));
            return out;
        }
        match c {
            ' ' => out.push(' '),
            c if c.is_control() || c.is_whitespace() || c == '\u{feff}' || is_bidi_control(c) => {
                out.extend(c.escape_default())
            }
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out
}

/// Characters that reorder how a line is displayed (the "trojan source" trick).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(loggable("a\nb\r\x1b[2J\t\0", 100), "a\\nb\\r\\u{1b}[2J\\t\\u{0}");
        assert_eq!(
            loggable("back\\slash", 100),
            "back\\\\slash",
            "an escape cannot be faked"
        );
        assert_eq!(
            loggable("plain text, ünïcode 数据", 100),
            "plain text, ünïcode 数据"
        );
        assert_eq!(loggable("x\u{202e}y", 100), "x\\u{202e}y");
    }

    #[test]
    fn long_text_is_cut_saying_its_length() {
        let huge = "x".repeat(1 << 20);
        let shown = loggable(&huge, 64);
        assert_eq!(shown, format!("{}… (1048576 bytes in all)", "x".repeat(64)));
        assert_eq!(
            loggable(&"x".repeat(64), 64),
            "x".repeat(64),
            "exactly the limit is not cut"
        );
    }
}
