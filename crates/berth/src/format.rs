//! Human output: sizes, short digests, times, aligned tables.

use std::time::SystemTime;

/// Bytes in decimal units (`1.5 kB`), the same words as the web UI.
pub use berth_server::ui::html::size;

/// `sha256:0123456789ab` (12 hex characters), enough to tell images apart on screen.
pub fn short(digest: &str) -> String {
    match digest.split_once(':') {
        Some((alg, hex)) => format!("{alg}:{}", &hex[..hex.len().min(12)]),
        None => digest.to_owned(),
    }
}

/// `in 6d 23h` / `2h ago` for an RFC 3339 time.
pub fn relative(rfc3339: &str) -> String {
    let Ok(t) = humantime::parse_rfc3339(rfc3339) else { return rfc3339.to_owned() };
    let now = SystemTime::now();
    let (d, future) = match t.duration_since(now) {
        Ok(d) => (d, true),
        Err(e) => (e.duration(), false),
    };
    let secs = d.as_secs();
    let text = if secs >= 86400 {
        format!("{}d {}h", secs / 86400, (secs % 86400) / 3600)
    } else if secs >= 3600 {
        format!("{}h {}m", secs / 3600, (secs % 3600) / 60)
    } else if secs >= 60 {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    };
    if future { format!("in {text}") } else { format!("{text} ago") }
}

/// Prints rows as left-aligned columns separated by two spaces.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_digests() {
        assert_eq!(size(999), "999 B");
        assert_eq!(size(1500), "1.5 kB");
        assert_eq!(size(3_200_000_000), "3.2 GB");
        assert_eq!(short("sha256:0123456789abcdef"), "sha256:0123456789ab");
    }
}
