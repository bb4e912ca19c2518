//! exec.d programs (buildpack spec, "Exec.d"): run before the process in the launch
//! environment, each writes TOML `NAME = "value"` lines to file descriptor 3, and those
//! variables are set for everything that runs after it.

use std::ffi::c_int;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use crate::env::Env;
use crate::error::Error;
use crate::toml::{self, Value};

const EXEC_D_FD: c_int = 3;
const F_SETFD: c_int = 2;

extern "C" {
    fn dup2(old: c_int, new: c_int) -> c_int;
    fn fcntl(fd: c_int, cmd: c_int, ...) -> c_int;
}

/// Runs one exec.d program with `env` and `app_dir` as its working directory, and applies
/// the variables it writes to `env`.
pub fn run(program: &Path, env: &mut Env, app_dir: &Path) -> Result<(), Error> {
    let failed = |e: io::Error| Error(format!("exec.d program {}: {e}", program.display()));
    let (mut output, writer) = io::pipe().map_err(failed)?;
    let fd = writer.as_raw_fd();
    let mut command = Command::new(program);
    command.env_clear().envs(env.iter()).current_dir(app_dir);
    // SAFETY: between fork and exec the closure only calls dup2 and fcntl, which are
    // async-signal-safe, and touches no memory of the parent.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(move || {
            // The pipe is close-on-exec; fd 3 must survive the exec (dup2 clears the flag
            // on the copy, and when the pipe already is fd 3 the flag is cleared directly).
            let result = if fd == EXEC_D_FD {
                fcntl(fd, F_SETFD, 0)
            } else {
                dup2(fd, EXEC_D_FD)
            };
            if result == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(failed)?;
    // The child holds the only write end now, so reading ends when it exits.
    drop(writer);
    let mut text = String::new();
    let read = output.read_to_string(&mut text);
    let status = child.wait().map_err(failed)?;
    if !status.success() {
        return Err(Error(format!(
            "exec.d program {} failed: {status}",
            program.display()
        )));
    }
    read.map_err(failed)?;
    let vars = toml::parse(&text).map_err(|e| {
        Error(format!(
            "exec.d program {} wrote bad TOML: {e}",
            program.display()
        ))
    })?;
    for (name, value) in vars {
        match value {
            Value::String(value) => {
                env.insert(name, value);
            }
            _ => {
                return Err(Error(format!(
                    "exec.d program {} set `{name}` to something other than a string",
                    program.display()
                )))
            }
        }
    }
    Ok(())
}
