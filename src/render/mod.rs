//! How the commands show things to people: plans, build histories, tables and the short
//! forms of digests and commit ids. Shared by every command that prints them.

pub mod builds;
pub mod plan;
pub mod publishes;

/// A value as people want to read it in a plan: `sha256:1a2b…` for digests, seven
/// characters for commit and tree ids, anything else as it is.
pub fn short(value: &str) -> String {
    const DIGEST_HEX: usize = 4;
    const COMMIT_HEX: usize = 7;
    if let Some((algorithm, hex)) = value.split_once(':') {
        if is_hex(hex) && hex.len() > DIGEST_HEX {
            return format!("{algorithm}:{}…", &hex[..DIGEST_HEX]);
        }
    }
    if is_hex(value) && value.len() >= 40 {
        return value[..COMMIT_HEX].to_string();
    }
    value.to_string()
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Columns padded to their widest cell, two spaces apart.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (cell, width) in cells.zip(&widths) {
            text.push_str(cell);
            text.extend(std::iter::repeat_n(' ', width + 2 - cell.chars().count()));
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::short;

    #[test]
    fn short_forms() {
        const C1: &str = "3f2a9c1e5b7d4a6f8e0c2b4d6f8a0c2e4b6d8f0a";
        const RUN1: &str =
            "sha256:1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f809";
        assert_eq!(short(RUN1), "sha256:1a2b…");
        assert_eq!(short(C1), "3f2a9c1");
        assert_eq!(short("default"), "default");
        assert_eq!(short("linux/amd64"), "linux/amd64");
    }
}
