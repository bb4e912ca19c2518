//! Which process the launcher starts and with which arguments (platform spec, "launcher"):
//! a process type named by argv[0] (`/cnb/process/<type>`), or else a command given by the
//! user. As in the reference launcher under Platform API 0.12, `CNB_PROCESS_TYPE` selects
//! nothing (the launcher warns about it), and the image's default process is reached only
//! through its `/cnb/process/<type>` entrypoint.

use crate::error::Error;
use crate::metadata::{Metadata, Process};

/// How the launcher was invoked.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The last path element of argv[0].
    pub name: String,
    /// `CNB_EXEC_ENV`, `production` when unset.
    pub exec_env: String,
    /// The arguments after argv[0].
    pub args: Vec<String>,
}

/// What to execute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// The type of a buildpack-provided process; `None` for a user-provided command.
    pub process_type: Option<String>,
    /// The program (direct) or the shell command text (not direct).
    pub command: String,
    pub args: Vec<String>,
    pub direct: bool,
    /// `None`: the app directory.
    pub working_dir: Option<String>,
}

/// Picks the process: the process type argv[0] names, with the user's arguments; else the
/// arguments are the command: `-- cmd args…` runs `cmd` directly, `cmd args…` through the
/// shell.
pub fn select(metadata: &Metadata, invocation: Invocation) -> Result<Launch, Error> {
    let named = (invocation.name != "launcher")
        .then_some(invocation.name.as_str())
        .filter(|name| metadata.processes.iter().any(|p| p.process_type == *name));
    match named {
        Some(process_type) => {
            let process = eligible(metadata, process_type, &invocation.exec_env)?;
            with_user_args(metadata, process, invocation.args)
        }
        None => user_command(invocation.args),
    }
}

/// The warning printed when `CNB_PROCESS_TYPE` is set: it selects nothing any more.
pub fn process_type_warning(process_type: &str, platform_api: &str) -> String {
    format!(
        "Warning: CNB_PROCESS_TYPE is not supported in Platform API {platform_api}\n\
         Warning: Run with ENTRYPOINT '{process_type}' to invoke the '{process_type}' process type"
    )
}

fn eligible<'m>(
    metadata: &'m Metadata,
    process_type: &str,
    exec_env: &str,
) -> Result<&'m Process, Error> {
    let mut of_type = metadata
        .processes
        .iter()
        .filter(|p| p.process_type == process_type)
        .peekable();
    if of_type.peek().is_none() {
        return Err(Error(format!(
            "process type `{process_type}` is not defined in this image"
        )));
    }
    of_type
        .find(|p| {
            p.exec_env.is_empty() || p.exec_env.iter().any(|e| e == "*" || e == exec_env)
        })
        .ok_or_else(|| {
            Error(format!(
                "process type `{process_type}` is not eligible for execution environment `{exec_env}`"
            ))
        })
}

/// The user's arguments replace the `args` of a process from a Buildpack API 0.9+
/// buildpack and extend those of an older one; command elements after the first are always
/// passed. Whether the process runs directly or through the shell is what its metadata says.
fn with_user_args(
    metadata: &Metadata,
    process: &Process,
    user_args: Vec<String>,
) -> Result<Launch, Error> {
    let modern = metadata
        .buildpack(&process.buildpack_id)
        .is_none_or(|bp| bp.api_at_least(0, 9));
    let (command, always) = process.command.split_first().ok_or_else(|| {
        Error(format!(
            "process type `{}` has no command",
            process.process_type
        ))
    })?;
    let mut args = always.to_vec();
    match (user_args.is_empty(), modern || !always.is_empty()) {
        (true, _) => args.extend(process.args.iter().cloned()),
        (false, true) => args.extend(user_args),
        (false, false) => args.extend(process.args.iter().cloned().chain(user_args)),
    }
    Ok(Launch {
        process_type: Some(process.process_type.clone()),
        command: command.clone(),
        args,
        direct: process.direct,
        working_dir: process.working_dir.clone(),
    })
}

fn user_command(mut args: Vec<String>) -> Result<Launch, Error> {
    let direct = args.first().is_some_and(|a| a == "--");
    if direct {
        args.remove(0);
    }
    if args.is_empty() {
        return Err(Error(
            "when there is no default process a command is required: give a command, or run a process type through /cnb/process/<type>".to_owned(),
        ));
    }
    let command = args.remove(0);
    Ok(Launch {
        process_type: None,
        command,
        args,
        direct,
        working_dir: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::Buildpack;

    fn metadata() -> Metadata {
        let process =
            |t: &str, command: &[&str], args: &[&str], bp: &str, exec_env: &[&str]| Process {
                process_type: t.into(),
                command: command.iter().map(|s| s.to_string()).collect(),
                args: args.iter().map(|s| s.to_string()).collect(),
                direct: bp == "new",
                working_dir: (t == "web").then(|| "/workspace/web".into()),
                buildpack_id: bp.into(),
                exec_env: exec_env.iter().map(|s| s.to_string()).collect(),
            };
        Metadata {
            default_process: Some("web".into()),
            buildpacks: vec![
                Buildpack {
                    id: "old".into(),
                    api: "0.8".into(),
                },
                Buildpack {
                    id: "new".into(),
                    api: "0.12".into(),
                },
            ],
            processes: vec![
                process("web", &["server"], &["--port", "80"], "new", &[]),
                process(
                    "always",
                    &["java", "-jar", "app.jar"],
                    &["--default"],
                    "new",
                    &[],
                ),
                process("shell", &["run $X"], &["a"], "old", &[]),
                process("test", &["tests"], &[], "new", &["test"]),
                process("any", &["any"], &[], "new", &["*"]),
                Process {
                    direct: false,
                    ..process("printf", &["printf"], &["%s", "$X"], "new", &[])
                },
            ],
        }
    }

    fn launch(t: Option<&str>, command: &str, args: &[&str], direct: bool) -> Launch {
        Launch {
            process_type: t.map(Into::into),
            command: command.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            direct,
            working_dir: (t == Some("web")).then(|| "/workspace/web".into()),
        }
    }

    #[test]
    fn selection() {
        struct Case {
            name: &'static str,
            argv0: &'static str,
            exec_env: &'static str,
            args: &'static [&'static str],
            want: Result<Launch, &'static str>,
        }
        let cases = [
            Case {
                name: "argv0 names a process",
                argv0: "web",
                exec_env: "production",
                args: &[],
                want: Ok(launch(Some("web"), "server", &["--port", "80"], true)),
            },
            Case {
                name: "user args replace the args of an API 0.9+ process",
                argv0: "web",
                exec_env: "production",
                args: &["--port", "90"],
                want: Ok(launch(Some("web"), "server", &["--port", "90"], true)),
            },
            Case {
                name: "command elements after the first are always passed",
                argv0: "always",
                exec_env: "production",
                args: &["x"],
                want: Ok(launch(
                    Some("always"),
                    "java",
                    &["-jar", "app.jar", "x"],
                    true,
                )),
            },
            Case {
                name: "without user args the default args follow the always-passed ones",
                argv0: "always",
                exec_env: "production",
                args: &[],
                want: Ok(launch(
                    Some("always"),
                    "java",
                    &["-jar", "app.jar", "--default"],
                    true,
                )),
            },
            Case {
                name: "user args extend the args of an older buildpack's shell process",
                argv0: "shell",
                exec_env: "production",
                args: &["b"],
                want: Ok(launch(Some("shell"), "run $X", &["a", "b"], false)),
            },
            Case {
                name: "the default process is not chosen when argv[0] names no process",
                argv0: "launcher",
                exec_env: "production",
                args: &[],
                want: Err("when there is no default process a command is required: give a command, or run a process type through /cnb/process/<type>"),
            },
            Case {
                name: "an API 0.9+ process whose metadata says not direct runs through the shell",
                argv0: "printf",
                exec_env: "production",
                args: &[],
                want: Ok(launch(Some("printf"), "printf", &["%s", "$X"], false)),
            },
            Case {
                name: "a user command runs through the shell",
                argv0: "launcher",
                exec_env: "production",
                args: &["echo", "$HOME"],
                want: Ok(launch(None, "echo", &["$HOME"], false)),
            },
            Case {
                name: "a user command after -- runs directly",
                argv0: "launcher",
                exec_env: "production",
                args: &["--", "echo", "hi"],
                want: Ok(launch(None, "echo", &["hi"], true)),
            },
            Case {
                name: "an unknown argv0 is not a process type",
                argv0: "unknown",
                exec_env: "production",
                args: &["--", "ls"],
                want: Ok(launch(None, "ls", &[], true)),
            },
            Case {
                name: "a process restricted to another exec env fails",
                argv0: "test",
                exec_env: "production",
                args: &[],
                want: Err(
                    "process type `test` is not eligible for execution environment `production`",
                ),
            },
            Case {
                name: "a process restricted to this exec env runs",
                argv0: "test",
                exec_env: "test",
                args: &[],
                want: Ok(launch(Some("test"), "tests", &[], true)),
            },
            Case {
                name: "* is every exec env",
                argv0: "any",
                exec_env: "development",
                args: &[],
                want: Ok(launch(Some("any"), "any", &[], true)),
            },
        ];
        for case in cases {
            let got = select(
                &metadata(),
                Invocation {
                    name: case.argv0.into(),
                    exec_env: case.exec_env.into(),
                    args: case.args.iter().map(|s| s.to_string()).collect(),
                },
            );
            assert_eq!(got, case.want.map_err(|e| Error(e.into())), "{}", case.name);
        }
    }

    #[test]
    fn nothing_to_run() {
        let metadata = Metadata::default();
        for args in [vec![], vec!["--".to_string()]] {
            let got = select(
                &metadata,
                Invocation {
                    name: "launcher".into(),
                    exec_env: "production".into(),
                    args,
                },
            );
            assert!(got.is_err_and(|e| e
                .0
                .starts_with("when there is no default process a command is required")));
        }
    }
}
