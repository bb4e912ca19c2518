//! The Kubernetes API's rules for names, label keys and label values: what the API
//! server would refuse is refused while kpack.toml is read. Each check returns why a
//! text is not valid.

/// A DNS-1123 label (a namespace): at most 63 lowercase letters, digits and `-`,
/// starting and ending with a letter or digit.
pub(crate) fn dns1123_label(name: &str) -> Result<(), String> {
    if name.len() > 63 {
        return Err(format!("{} characters; at most 63", name.len()));
    }
    label_chars(name)
}

/// A DNS-1123 subdomain (a Secret or service account name): at most 253 characters,
/// DNS-1123 labels joined by `.`.
pub(crate) fn dns1123_subdomain(name: &str) -> Result<(), String> {
    if name.len() > 253 {
        return Err(format!("{} characters; at most 253", name.len()));
    }
    name.split('.').try_for_each(label_chars)
}

fn label_chars(label: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    let ends = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if let Some(bad) = label.chars().find(|c| !allowed(*c)) {
        return Err(format!(
            "`{bad}` is not allowed: lowercase letters, digits, `-` and `.` only"
        ));
    }
    if !ends(label.chars().next()) || !ends(label.chars().next_back()) {
        return Err("must start and end with a lowercase letter or digit".to_string());
    }
    Ok(())
}

/// A qualified name (a label key, a resource name): `[prefix/]name`, the prefix a
/// DNS-1123 subdomain, the name at most 63 letters, digits, `-`, `_` and `.`, starting
/// and ending with a letter or digit.
pub(crate) fn qualified_name(key: &str) -> Result<(), String> {
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            if prefix.is_empty() {
                return Err("the prefix before `/` is empty".to_string());
            }
            dns1123_subdomain(prefix).map_err(|why| format!("the prefix `{prefix}`: {why}"))?;
            name
        }
        None => key,
    };
    if name.is_empty() {
        return Err("the name is empty".to_string());
    }
    label_value(name)
}

/// A label value: empty, or at most 63 letters, digits, `-`, `_` and `.`, starting and
/// ending with a letter or digit.
pub(crate) fn label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    if value.len() > 63 {
        return Err(format!("{} characters; at most 63", value.len()));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if let Some(bad) = value.chars().find(|c| !allowed(*c)) {
        return Err(format!(
            "`{bad}` is not allowed: letters, digits, `-`, `_` and `.` only"
        ));
    }
    let ends = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !ends(value.chars().next()) || !ends(value.chars().next_back()) {
        return Err("must start and end with a letter or digit".to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(dns1123_label("builds").is_ok());
        assert!(dns1123_label("kpackd-2").is_ok());
        assert!(dns1123_label("Builds").is_err());
        assert!(dns1123_label("-builds").is_err());
        assert!(dns1123_label("a.b").is_err());
        assert!(dns1123_label(&"a".repeat(64)).is_err());
        assert!(dns1123_label("").is_err());
        assert!(dns1123_subdomain("kpackd.build").is_ok());
        assert!(dns1123_subdomain("regcred").is_ok());
        assert!(dns1123_subdomain("a..b").is_err());
        assert!(dns1123_subdomain("reg_cred").is_err());
    }

    #[test]
    fn labels() {
        assert!(qualified_name("kubernetes.io/arch").is_ok());
        assert!(qualified_name("disktype").is_ok());
        assert!(qualified_name("node_pool.x").is_ok());
        assert!(qualified_name("/arch").is_err());
        assert!(qualified_name("Kubernetes.io/arch").is_err());
        assert!(qualified_name("kubernetes.io/").is_err());
        assert!(qualified_name("a/b/c").is_err());
        assert!(label_value("").is_ok());
        assert!(label_value("amd64").is_ok());
        assert!(label_value("Linux_x86-64.v2").is_ok());
        assert!(label_value("a b").is_err());
        assert!(label_value("-a").is_err());
        assert!(label_value(&"a".repeat(64)).is_err());
    }
}
