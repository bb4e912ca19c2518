//! Processes that are not direct run through a shell: their command text is shell code,
//! each argument is appended as one word (still open to `$VAR` expansion), and with bash
//! the `profile.d` scripts and the app's `.profile` are sourced first, in one shell.

use std::path::Path;

/// The shell code of a process: its command text followed by its arguments, each in double
/// quotes so that it stays one word while variables in it still expand, as the reference
/// launcher evaluates them.
pub fn command_line(command: &str, args: &[String]) -> String {
    let mut line = command.to_owned();
    for arg in args {
        line.push_str(" \"");
        for c in arg.chars() {
            if matches!(c, '"' | '\\' | '`') {
                line.push('\\');
            }
            line.push(c);
        }
        line.push('"');
    }
    line
}

/// The script `bash -c` runs, with the command line as `$1`: it sources each profile, then
/// replaces itself with a fresh `bash -c` of the command line, so that a simple command ends
/// up as the container's process instead of a child of it.
pub fn profile_script(bash: &Path, profiles: &[impl AsRef<Path>]) -> String {
    let mut script = String::new();
    for profile in profiles {
        script.push_str("source ");
        script.push_str(&single_quoted(&profile.as_ref().to_string_lossy()));
        script.push('\n');
    }
    script.push_str("exec ");
    script.push_str(&single_quoted(&bash.to_string_lossy()));
    script.push_str(" -c \"$1\"");
    script
}

fn single_quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let cases: &[(&str, &[&str], &str)] = &[
            ("run", &[], "run"),
            ("cd app && run", &["a b"], "cd app && run \"a b\""),
            (
                "echo",
                &["$HOME", "say \"hi\"", "a\\b", "`x`"],
                r#"echo "$HOME" "say \"hi\"" "a\\b" "\`x\`""#,
            ),
        ];
        for (command, a, want) in cases {
            assert_eq!(command_line(command, &args(a)), *want);
        }
    }

    #[test]
    fn script_sources_profiles_in_order() {
        let script = profile_script(
            Path::new("/bin/bash"),
            &["/layers/a/l/profile.d/x.sh", "/workspace/it's/.profile"],
        );
        assert_eq!(
            script,
            "source '/layers/a/l/profile.d/x.sh'\nsource '/workspace/it'\\''s/.profile'\nexec '/bin/bash' -c \"$1\""
        );
    }
}
