//! HTML, written by hand: every text from the repository, the node or the user goes through
//! [`esc`]; the layout is one function.

use axum::response::Html;

/// Text made safe for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// A value for a URL's query string.
pub fn q(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The hidden field every form of the page carries.
pub fn csrf_field(csrf: &str) -> String {
    format!(r#"<input type="hidden" name="csrf" value="{}">"#, esc(csrf))
}

/// A form with one button that posts to `action`.
pub fn button(action: &str, label: &str, csrf: &str, id: &str) -> String {
    format!(
        r#"<form method="post" action="{}" class="inline">{}<button type="submit" id="{id}">{}</button></form>"#,
        esc(action),
        csrf_field(csrf),
        esc(label)
    )
}

/// The page around `body`. `nav`: which tab is current ("" for none, as on first run).
pub fn page(title: &str, nav: &str, body: &str) -> Html<String> {
    let tab = |href: &str, name: &str, label: &str| {
        format!(
            r#"<a href="{href}"{}>{label}</a>"#,
            if nav == name {
                r#" aria-current="page""#
            } else {
                ""
            }
        )
    };
    let menu = if nav.is_empty() {
        String::new()
    } else {
        format!(
            "<nav>{}{}{}</nav>",
            tab("/", "overview", "Overview"),
            tab("/snapshots", "snapshots", "Snapshots"),
            tab("/settings", "settings", "Settings")
        )
    };
    Html(format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{} — pluto</title>
<link rel="stylesheet" href="/app.css">
<script src="/app.js" defer></script>
</head>
<body>
<header><span class="brand">pluto</span>{menu}</header>
<main>
{body}
</main>
</body>
</html>
"#,
        esc(title)
    ))
}

/// Seconds as people say them: "3 minutes", "2 hours".
pub fn ago(now: u64, then: u64) -> String {
    format!(
        "{} ago",
        pluto_netsync::verdict::human_duration(now.saturating_sub(then))
    )
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A local time, as `2026-12-03 14:05`.
pub fn when(unix: i64) -> String {
    use chrono::TimeZone;
    chrono::Local
        .timestamp_opt(unix, 0)
        .single()
        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|| unix.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_disk_cannot_become_markup() {
        assert_eq!(
            esc(r#"<img src=x onerror="a('b')">&"#),
            "&lt;img src=x onerror=&quot;a(&#39;b&#39;)&quot;&gt;&amp;"
        );
        assert_eq!(q("a b/c&d"), "a+b%2Fc%26d");
    }
}
