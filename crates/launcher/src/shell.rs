//! Processes that are not direct run through a shell, the way the reference launcher runs
//! them (platform spec, "launcher"; its `bash.go`):
//!
//! - with no arguments, the command text is a script: `bash -c "<command>"`;
//! - with arguments, the command and each argument are one word each, and each word is
//!   evaluated as `eval echo "<word>"` would: variables and command substitutions expand,
//!   and quotes inside a word are removed.
//!
//! With bash, the `profile.d` scripts and the app's `.profile` are sourced first, then the
//! shell changes to the working directory, in one shell that then replaces itself with the
//! process.

use std::path::Path;

/// How the shell receives a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// The command text is shell code (the process has no arguments).
    Script,
    /// The command and its arguments are `words` words, each evaluated on its own.
    Words(usize),
}

impl Form {
    /// The form of a process with these arguments.
    pub fn of(args: &[String]) -> Form {
        if args.is_empty() {
            Form::Script
        } else {
            Form::Words(args.len() + 1)
        }
    }
}

/// The program a shell runs with the command as `$0` and the arguments as `$1…`: each of
/// them evaluated as `eval echo "…"` does, each kept one word.
pub fn words_program(words: usize) -> String {
    (0..words)
        .map(|i| match i {
            0 => r#""$(eval echo \"$0\")""#.to_owned(),
            i => format!(r#""$(eval echo \"${{{i}}}\")""#),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The script `bash -c` runs with the caller as `$0`, the command as `$1` and the
/// arguments after it: it sources each profile, changes to `working_dir`, then replaces
/// itself with a fresh bash running the process in its `form`, so that a simple command
/// ends up as the container's process instead of a child of it.
pub fn profile_script(
    bash: &Path,
    profiles: &[impl AsRef<Path>],
    working_dir: &Path,
    form: Form,
) -> String {
    let mut script = String::new();
    for profile in profiles {
        script.push_str("source ");
        script.push_str(&single_quoted(&profile.as_ref().to_string_lossy()));
        script.push('\n');
    }
    script.push_str("cd ");
    script.push_str(&single_quoted(&working_dir.to_string_lossy()));
    script.push('\n');
    script.push_str("exec ");
    script.push_str(&single_quoted(&bash.to_string_lossy()));
    match form {
        Form::Script => script.push_str(r#" -c "$@""#),
        Form::Words(words) => {
            script.push_str(" -c ");
            script.push_str(&single_quoted(&words_program(words)));
            script.push_str(r#" "${@:1}""#);
        }
    }
    script
}

fn single_quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_evaluated_one_by_one() {
        assert_eq!(words_program(1), r#""$(eval echo \"$0\")""#);
        assert_eq!(
            words_program(3),
            r#""$(eval echo \"$0\")" "$(eval echo \"${1}\")" "$(eval echo \"${2}\")""#
        );
        assert_eq!(Form::of(&[]), Form::Script);
        assert_eq!(Form::of(&["a".to_owned()]), Form::Words(2));
    }

    #[test]
    fn script_sources_profiles_in_order_then_changes_directory() {
        let script = profile_script(
            Path::new("/bin/bash"),
            &["/layers/a/l/profile.d/x.sh", "/workspace/it's/.profile"],
            Path::new("/workspace"),
            Form::Script,
        );
        assert_eq!(
            script,
            "source '/layers/a/l/profile.d/x.sh'\nsource '/workspace/it'\\''s/.profile'\ncd '/workspace'\nexec '/bin/bash' -c \"$@\""
        );
        let script = profile_script(
            Path::new("/bin/bash"),
            &[] as &[&str],
            Path::new("/w"),
            Form::Words(2),
        );
        assert_eq!(
            script,
            "cd '/w'\nexec '/bin/bash' -c '\"$(eval echo \\\"$0\\\")\" \"$(eval echo \\\"${1}\\\")\"' \"${@:1}\""
        );
    }
}
