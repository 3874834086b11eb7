//! The one HTML escaper, for the server's pages and the sandbox's alike. It lives in this crate
//! because this is the only crate of Tollgate's that both may use (the sandbox may depend on no
//! other).

/// Escapes text for element content and quoted attribute values: `&`, `<`, `>`, `"` and `'`.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::esc;

    #[test]
    fn escapes_the_five_characters_and_nothing_else() {
        assert_eq!(
            esc(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(esc("/ = ` é 日本 &amp;"), "/ = ` é 日本 &amp;amp;");
        assert_eq!(esc(""), "");
    }
}
