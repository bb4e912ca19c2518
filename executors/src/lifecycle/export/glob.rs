//! Matching the paths of slices against their patterns.

/// Go's `filepath.Match` on `/`-separated paths: `*` and `?` never match `/`; `[...]`
/// classes with ranges and `^` negation; `\` escapes. `**` is two `*`: it does not cross
/// `/` either. A malformed class matches nothing.
///
/// Patterns come from buildpacks, so matching must not backtrack: the name positions the
/// pattern can have reached are carried token by token, in O(pattern × name) time.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let Some(tokens) = tokens(pattern) else {
        return false;
    };
    let name: Vec<char> = name.chars().collect();
    // reached[j]: the tokens so far can match exactly `name[..j]`.
    let mut reached = vec![false; name.len() + 1];
    reached[0] = true;
    for token in &tokens {
        let mut next = vec![false; name.len() + 1];
        match token {
            Token::Star => {
                // Any run of characters other than `/` after a reached position.
                let mut open = false;
                for j in 0..=name.len() {
                    open = reached[j] || (open && name[j - 1] != '/');
                    next[j] = open;
                }
            }
            single => {
                for j in 0..name.len() {
                    next[j + 1] = reached[j] && single.matches(name[j]);
                }
            }
        }
        if !next.contains(&true) {
            return false;
        }
        reached = next;
    }
    reached[name.len()]
}

/// One element of a glob pattern.
enum Token {
    /// `*`: any run of characters but `/`.
    Star,
    /// `?`: one character but `/`.
    Any,
    /// `[...]`: one character but `/` in (or, negated, not in) the ranges.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    /// A character, possibly escaped with `\`; it may be `/`.
    Literal(char),
}

impl Token {
    /// Whether this single-character token matches `c`.
    fn matches(&self, c: char) -> bool {
        match self {
            Token::Star | Token::Any => c != '/',
            Token::Class { negated, ranges } => {
                c != '/' && ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
            }
            Token::Literal(l) => *l == c,
        }
    }
}

/// The tokens of `pattern`; `None` when a class is malformed.
fn tokens(pattern: &str) -> Option<Vec<Token>> {
    let p: Vec<char> = pattern.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            '*' => {
                tokens.push(Token::Star);
                i += 1;
            }
            '?' => {
                tokens.push(Token::Any);
                i += 1;
            }
            '[' => {
                let (class, len) = class(&p[i + 1..])?;
                tokens.push(class);
                i += 1 + len;
            }
            '\\' if i + 1 < p.len() => {
                tokens.push(Token::Literal(p[i + 1]));
                i += 2;
            }
            c => {
                tokens.push(Token::Literal(c));
                i += 1;
            }
        }
    }
    Some(tokens)
}

/// Parses a class body (after `[`): the class and the length of the body including `]`;
/// `None` when the class is malformed. A `]` right after `[` or `[^` is a member.
fn class(p: &[char]) -> Option<(Token, usize)> {
    let mut i = 0;
    let negated = p.first() == Some(&'^');
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let ch = *p.get(i)?;
        if ch == ']' && !first {
            return Some((Token::Class { negated, ranges }, i + 1));
        }
        first = false;
        let lo = if ch == '\\' {
            i += 1;
            *p.get(i)?
        } else {
            ch
        };
        i += 1;
        let hi = if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|&h| h != ']') {
            i += 1;
            let h = if p[i] == '\\' {
                i += 1;
                *p.get(i)?
            } else {
                p[i]
            };
            i += 1;
            h
        } else {
            lo
        };
        ranges.push((lo, hi));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_go() {
        assert!(glob_match("static/*", "static/a.css"));
        assert!(!glob_match("static/*", "static/a/b.css"));
        assert!(glob_match("*.txt", "notes.txt"));
        assert!(!glob_match("*.txt", "dir/notes.txt"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "a/c"));
        assert!(glob_match("[a-c]x", "bx"));
        assert!(!glob_match("[^a-c]x", "bx"));
        assert!(glob_match("\\*", "*"));
        assert!(!glob_match("[", "a"));
        assert!(glob_match("**", "ab"));
        assert!(!glob_match("**", "a/b"));
        assert!(glob_match("a/**/c", "a/b/c"));
        assert!(!glob_match("a/**/c", "a/b/d/c"));
        assert!(glob_match("\\/", "/"));
        assert!(glob_match("a\\", "a\\"));
        assert!(glob_match("[]]", "]"));
        assert!(!glob_match("a[", ""));
        assert!(glob_match("", ""));
    }

    /// Many `*` against a long name that does not match: a backtracking matcher takes
    /// exponential time here (patterns come from buildpacks).
    #[test]
    fn many_stars_match_in_polynomial_time() {
        let pattern = format!("{}b", "a*".repeat(30));
        let name = "a".repeat(200);
        assert!(!glob_match(&pattern, &name));
        assert!(glob_match(&pattern, &format!("{name}b")));
        assert!(!glob_match(&"*".repeat(30), &format!("{name}/")));
    }

    /// The matcher kpackd had before, which backtracks: the new one must agree with it on
    /// every small pattern and name.
    /// Go's `filepath.Match` on `/`-separated paths: `*` and `?` never match `/`; `[...]`
    /// classes with ranges and `^` negation; `\` escapes.
    fn reference_match(pattern: &str, name: &str) -> bool {
        let p: Vec<char> = pattern.chars().collect();
        let n: Vec<char> = name.chars().collect();
        ref_from(&p, &n)
    }

    fn ref_from(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => {
                let rest = &p[1..];
                (0..=n.len())
                    .take_while(|&i| i == 0 || n[i - 1] != '/')
                    .any(|i| ref_from(rest, &n[i..]))
            }
            Some('?') => n.first().is_some_and(|&c| c != '/') && ref_from(&p[1..], &n[1..]),
            Some('[') => {
                let Some(&c) = n.first() else { return false };
                match ref_class(&p[1..], c) {
                    Some((matched, len)) => matched && c != '/' && ref_from(&p[1 + len..], &n[1..]),
                    None => false,
                }
            }
            Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && ref_from(&p[2..], &n[1..]),
            Some(&c) => n.first() == Some(&c) && ref_from(&p[1..], &n[1..]),
        }
    }

    /// Matches `c` against a class body (after `[`): whether it matched and the length of
    /// the body including `]`; `None` when the class is malformed.
    fn ref_class(p: &[char], c: char) -> Option<(bool, usize)> {
        let mut i = 0;
        let negated = p.first() == Some(&'^');
        if negated {
            i += 1;
        }
        let mut matched = false;
        let mut first = true;
        loop {
            let ch = *p.get(i)?;
            if ch == ']' && !first {
                return Some((matched != negated, i + 1));
            }
            first = false;
            let lo = if ch == '\\' {
                i += 1;
                *p.get(i)?
            } else {
                ch
            };
            i += 1;
            let hi = if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|&h| h != ']') {
                i += 1;
                let h = if p[i] == '\\' {
                    i += 1;
                    *p.get(i)?
                } else {
                    p[i]
                };
                i += 1;
                h
            } else {
                lo
            };
            if lo <= c && c <= hi {
                matched = true;
            }
        }
    }

    #[test]
    fn globs_match_like_the_backtracking_matcher() {
        let atoms = [
            "a", "b", "/", "*", "?", "[a-b]", "[^a]", "\\*", "\\", "[", "]",
        ];
        let chars = ['a', 'b', '/', '*', ']', '\\'];
        let mut patterns = vec![String::new()];
        for _ in 0..3 {
            let longer: Vec<String> = patterns
                .iter()
                .flat_map(|p| atoms.iter().map(move |a| format!("{p}{a}")))
                .collect();
            patterns.extend(longer);
        }
        patterns.sort();
        patterns.dedup();
        let mut names = vec![String::new()];
        for _ in 0..4 {
            let longer: Vec<String> = names
                .iter()
                .flat_map(|n| chars.iter().map(move |c| format!("{n}{c}")))
                .collect();
            names.extend(longer);
        }
        names.sort();
        names.dedup();
        for pattern in &patterns {
            for name in &names {
                assert_eq!(
                    glob_match(pattern, name),
                    reference_match(pattern, name),
                    "pattern {pattern:?}, name {name:?}"
                );
            }
        }
    }
}
