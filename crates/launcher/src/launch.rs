//! Starting a process of an app image: pick it (process.rs), build its environment from the
//! launch layers in buildpack order (env.rs, exec_d.rs), then replace the launcher with it,
//! directly or through the shell (shell.rs).

use std::convert::Infallible;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::env::{self, Env, Phase};
use crate::error::Error;
use crate::exec_d;
use crate::metadata::Metadata;
use crate::process::{self, Invocation, Launch};
use crate::shell;

/// Variables the launcher reads that the process must not inherit (platform spec, "Launch
/// Environment"; the reference launcher's exclude list).
const LAUNCHER_ONLY: [&str; 5] = [
    "CNB_APP_DIR",
    "CNB_LAYERS_DIR",
    "CNB_PROCESS_TYPE",
    "CNB_PLATFORM_API",
    "CNB_DEPRECATION_MODE",
];

/// The launcher's own directories, dropped from the process's PATH.
const LAUNCHER_PATH_DIRS: [&str; 2] = ["/cnb/process", "/cnb/lifecycle"];

/// The Platform API named in warnings when the image sets none.
const DEFAULT_PLATFORM_API: &str = "0.12";

/// Runs the launcher with its own argv and environment; returns only on failure.
pub fn launch() -> Result<Infallible, Error> {
    let mut argv = std::env::args_os();
    let caller = argv.next().unwrap_or_else(|| OsString::from("launcher"));
    let name = Path::new(&caller)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let args = argv
        .map(|a| {
            a.into_string()
                .map_err(|a| Error(format!("argument {a:?} is not UTF-8")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (mut env, foreign) = inherited_env();
    let layers_dir = PathBuf::from(take(&mut env, "CNB_LAYERS_DIR", "/layers"));
    let app_dir = PathBuf::from(take(&mut env, "CNB_APP_DIR", "/workspace"));
    let platform_api = take(&mut env, "CNB_PLATFORM_API", DEFAULT_PLATFORM_API);
    env.remove("CNB_DEPRECATION_MODE");
    if let Some(process_type) = env.remove("CNB_PROCESS_TYPE").filter(|t| !t.is_empty()) {
        eprintln!(
            "{}",
            process::process_type_warning(&process_type, &platform_api)
        );
    }
    let metadata = Metadata::read(&layers_dir.join("config").join("metadata.toml"))?;
    let launch = process::select(
        &metadata,
        Invocation {
            name,
            exec_env: env
                .get("CNB_EXEC_ENV")
                .cloned()
                .unwrap_or_else(|| "production".to_owned()),
            args,
        },
    )?;
    let layers = launch_layers(&layers_dir, &metadata)?;
    let process_type = launch.process_type.as_deref();
    for buildpack_layers in &layers {
        for layer in buildpack_layers {
            env::prepend_layer_paths(&mut env, layer, Phase::Launch);
        }
        for layer in buildpack_layers {
            env::apply_layer_env_files(&mut env, layer, Phase::Launch, process_type)
                .map_err(|e| Error(format!("cannot apply launch env: {e}")))?;
        }
    }
    for program in layer_files(&layers, "exec.d", process_type)? {
        exec_d::run(&program, &mut env, &app_dir)?;
    }
    let working_dir = launch
        .working_dir
        .as_deref()
        .map_or(app_dir.as_path(), Path::new);
    let mut command = command(&launch, &env, &layers, &app_dir, working_dir, &caller)?;
    command
        .env_clear()
        .envs(&env)
        .envs(foreign)
        .current_dir(working_dir);
    let error = command.exec();
    Err(Error(format!(
        "cannot execute `{}`: {error}",
        launch.command
    )))
}

/// The launcher's environment, which the process inherits, with `/cnb/process` and
/// `/cnb/lifecycle` dropped from PATH. Variables that are not UTF-8 are passed through
/// untouched (second element); layering never involves them.
fn inherited_env() -> (Env, Vec<(OsString, OsString)>) {
    let mut env = Env::new();
    let mut foreign = Vec::new();
    for (name, value) in std::env::vars_os() {
        match (name.into_string(), value.into_string()) {
            (Ok(name), Ok(value)) => {
                env.insert(name, value);
            }
            (name, value) => foreign.push((
                name.map_or_else(|n| n, OsString::from),
                value.map_or_else(|v| v, OsString::from),
            )),
        }
    }
    if let Some(path) = env.get_mut("PATH") {
        *path = path
            .split(':')
            .filter(|dir| !LAUNCHER_PATH_DIRS.contains(dir))
            .collect::<Vec<_>>()
            .join(":");
    }
    (env, foreign)
}

/// Removes a launcher-only variable, returning its value or `default`.
fn take(env: &mut Env, name: &str, default: &str) -> String {
    debug_assert!(LAUNCHER_ONLY.contains(&name));
    env.remove(name)
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// Per buildpack in build order, its layer directories sorted by name.
fn launch_layers(layers_dir: &Path, metadata: &Metadata) -> Result<Vec<Vec<PathBuf>>, Error> {
    metadata
        .buildpacks
        .iter()
        .map(|bp| {
            let mut layers: Vec<PathBuf> = entries(&layers_dir.join(bp.dir_name()))?
                .into_iter()
                .filter(|path| path.is_dir())
                .collect();
            layers.sort();
            Ok(layers)
        })
        .collect()
}

/// The files of `<layer>/<dir>/` of every layer, then those of `<layer>/<dir>/<process>/`,
/// each pass in buildpack order, layer name order and file name order.
fn layer_files(
    layers: &[Vec<PathBuf>],
    dir: &str,
    process_type: Option<&str>,
) -> Result<Vec<PathBuf>, Error> {
    let mut files = Vec::new();
    let mut passes = vec![PathBuf::from(dir)];
    if let Some(process_type) = process_type {
        passes.push(Path::new(dir).join(process_type));
    }
    for pass in passes {
        for layer in layers.iter().flatten() {
            let mut found: Vec<PathBuf> = entries(&layer.join(&pass))?
                .into_iter()
                .filter(|path| path.is_file())
                .collect();
            found.sort();
            files.extend(found);
        }
    }
    Ok(files)
}

/// The paths in `dir`; none when it does not exist.
fn entries(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let listing = match fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error(format!("cannot list {}: {e}", dir.display()))),
    };
    listing
        .map(|entry| {
            entry
                .map(|e| e.path())
                .map_err(|e| Error(format!("cannot list {}: {e}", dir.display())))
        })
        .collect()
}

/// The command that runs the process: the program itself when direct, otherwise bash
/// sourcing the profiles (or `/bin/sh` without them when the image has no bash), with the
/// command and arguments in the shell's [`Form`](shell::Form).
fn command(
    launch: &Launch,
    env: &Env,
    layers: &[Vec<PathBuf>],
    app_dir: &Path,
    working_dir: &Path,
    caller: &OsString,
) -> Result<Command, Error> {
    let path = env.get("PATH").map_or("", String::as_str);
    if launch.direct {
        let program = find_program(&launch.command, path).ok_or_else(|| {
            Error(format!(
                "command `{}` not found in PATH={path}",
                launch.command
            ))
        })?;
        let mut command = Command::new(program);
        command.arg0(&launch.command).args(&launch.args);
        return Ok(command);
    }
    let form = shell::Form::of(&launch.args);
    let Some(bash) = find_program("bash", path).or_else(|| find_program("/bin/bash", "")) else {
        let mut command = Command::new("/bin/sh");
        match form {
            shell::Form::Script => command.arg("-c").arg(&launch.command),
            shell::Form::Words(words) => command
                .arg("-c")
                .arg(shell::words_program(words))
                .arg(&launch.command)
                .args(&launch.args),
        };
        return Ok(command);
    };
    let mut profiles = layer_files(layers, "profile.d", launch.process_type.as_deref())?;
    let app_profile = app_dir.join(".profile");
    if app_profile.is_file() {
        profiles.push(app_profile);
    }
    let mut command = Command::new(&bash);
    command
        .arg0("bash")
        .arg("-c")
        .arg(shell::profile_script(&bash, &profiles, working_dir, form))
        .arg(caller)
        .arg(&launch.command)
        .args(&launch.args);
    Ok(command)
}

/// `program` itself when it has a `/`, else the first executable file of that name in
/// `path`.
fn find_program(program: &str, path: &str) -> Option<PathBuf> {
    let executable = |candidate: &Path| {
        fs::metadata(candidate).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let candidate = PathBuf::from(program);
        return executable(&candidate).then_some(candidate);
    }
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(program))
        .find(|candidate| executable(candidate))
}
