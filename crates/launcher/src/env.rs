//! CNB environment files: how a layer's `env/`, `env.build/` and `env.launch/` directories,
//! and its `bin/` and `lib/` directories, modify the environment of later buildpacks (build
//! phase) and of the launched process (launch phase). One implementation serves both.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;

/// An environment: variable name to value, in a stable order.
pub type Env = BTreeMap<String, String>;

/// The POSIX path variables: a user-provided value for one of these is prepended to what
/// buildpacks set, instead of replacing it.
pub const POSIX_PATH_VARS: [&str; 5] = [
    "PATH",
    "LD_LIBRARY_PATH",
    "LIBRARY_PATH",
    "CPATH",
    "PKG_CONFIG_PATH",
];

/// Which phase a layer's environment is applied for: it picks `env.build/` or
/// `env.launch/`, and which well-known layer subdirectories join path variables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Build,
    Launch,
}

impl Phase {
    /// Layer subdirectory → the variables it is prepended to (buildpack spec, "Layer Paths").
    fn layer_paths(self) -> &'static [(&'static str, &'static [&'static str])] {
        match self {
            Phase::Build => &[
                ("bin", &["PATH"]),
                ("lib", &["LD_LIBRARY_PATH", "LIBRARY_PATH"]),
                ("include", &["CPATH"]),
                ("pkgconfig", &["PKG_CONFIG_PATH"]),
            ],
            Phase::Launch => &[("bin", &["PATH"]), ("lib", &["LD_LIBRARY_PATH"])],
        }
    }

    fn env_dir(self) -> &'static str {
        match self {
            Phase::Build => "env.build",
            Phase::Launch => "env.launch",
        }
    }
}

/// What a file named `NAME` without a suffix does: buildpack env directories override
/// (every buildpack API from 0.5 on, which is all kpackd runs), operator directories
/// (`<build-config>/env/`) only set a default.
#[derive(Clone, Copy)]
enum Bare {
    Override,
    Default,
}

/// Applies a layer for `phase`: first its `bin/`, `lib/` (and at build `include/`,
/// `pkgconfig/`) directories are prepended to their path variables, then its env files
/// (see [`apply_layer_env_files`]). A missing layer directory changes nothing.
pub fn apply_layer_env(
    env: &mut Env,
    layer_dir: &Path,
    phase: Phase,
    process: Option<&str>,
) -> io::Result<()> {
    prepend_layer_paths(env, layer_dir, phase);
    apply_layer_env_files(env, layer_dir, phase, process)
}

/// Prepends the layer's well-known subdirectories that exist to their path variables,
/// `:`-separated.
pub fn prepend_layer_paths(env: &mut Env, layer_dir: &Path, phase: Phase) {
    for (subdir, vars) in phase.layer_paths() {
        let dir = layer_dir.join(subdir);
        if !dir.is_dir() {
            continue;
        }
        let dir = dir.to_string_lossy();
        for var in *vars {
            prepend(env, var, &dir, ":");
        }
    }
}

/// Applies `<layer>/env/`, then `<layer>/env.build/` or `<layer>/env.launch/`, then at
/// launch `<layer>/env.launch/<process>/`. Applied in this order, layer after layer and
/// buildpack after buildpack, the files give exactly the spec's precedence: the latest
/// override wins, the earliest default wins, later prepends come first, later appends last.
pub fn apply_layer_env_files(
    env: &mut Env,
    layer_dir: &Path,
    phase: Phase,
    process: Option<&str>,
) -> io::Result<()> {
    apply_env_dir(env, &layer_dir.join("env"))?;
    let phase_dir = layer_dir.join(phase.env_dir());
    apply_env_dir(env, &phase_dir)?;
    match (phase, process) {
        (Phase::Launch, Some(process)) => apply_env_dir(env, &phase_dir.join(process)),
        _ => Ok(()),
    }
}

/// Applies one buildpack env directory. The variable is the file name up to the first
/// `.`; the rest picks the modification: none or `.override` sets, `.default` sets only an
/// empty or unset variable, `.prepend`/`.append` join with the content of `NAME.delim` in
/// the same directory (nothing without one). Other suffixes are ignored, as are
/// subdirectories. Contents are used byte for byte. A missing directory changes nothing.
pub fn apply_env_dir(env: &mut Env, dir: &Path) -> io::Result<()> {
    apply_dir(env, dir, Bare::Override)
}

/// Applies the operator's `<build-config>/env/` directory: the same rules as
/// [`apply_env_dir`], except that a file without a suffix sets a default.
pub fn apply_operator_env_dir(env: &mut Env, dir: &Path) -> io::Result<()> {
    apply_dir(env, dir, Bare::Default)
}

/// Applies the user's `<platform>/env/` directory: each file name is a variable; its content
/// is prepended (`:`-separated) to a POSIX path variable and replaces any other variable.
pub fn apply_user_env_dir(env: &mut Env, dir: &Path) -> io::Result<()> {
    for (name, value) in read_env_files(dir)? {
        if POSIX_PATH_VARS.contains(&name.as_str()) {
            prepend(env, &name, &value, ":");
        } else {
            env.insert(name, value);
        }
    }
    Ok(())
}

fn apply_dir(env: &mut Env, dir: &Path, bare: Bare) -> io::Result<()> {
    let files = read_env_files(dir)?;
    let delimiter = |name: &str| -> &str {
        let delim_file = format!("{name}.delim");
        files
            .iter()
            .find(|(file, _)| *file == delim_file)
            .map_or("", |(_, content)| content.as_str())
    };
    for (file, content) in &files {
        let (name, suffix) = file.split_once('.').unwrap_or((file.as_str(), ""));
        match (suffix, bare) {
            ("override", _) | ("", Bare::Override) => {
                env.insert(name.to_owned(), content.clone());
            }
            ("default", _) | ("", Bare::Default) if env.get(name).is_none_or(String::is_empty) => {
                env.insert(name.to_owned(), content.clone());
            }
            ("prepend", _) => prepend(env, name, content, delimiter(name)),
            ("append", _) => {
                let delim = delimiter(name);
                let value = env.entry(name.to_owned()).or_default();
                if !value.is_empty() {
                    value.push_str(delim);
                }
                value.push_str(content);
            }
            _ => {}
        }
    }
    Ok(())
}

/// Puts `value` in front of the variable, separated by `delim` when it was not empty.
fn prepend(env: &mut Env, name: &str, value: &str, delim: &str) {
    let new = match env.get(name) {
        Some(old) if !old.is_empty() => format!("{value}{delim}{old}"),
        _ => value.to_owned(),
    };
    env.insert(name.to_owned(), new);
}

/// The regular files of `dir` (symlinks followed) with their contents, sorted by name; none
/// when `dir` does not exist.
fn read_env_files(dir: &Path) -> io::Result<Vec<(String, String)>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(with_path(e, dir)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| with_path(e, dir))?.path();
        if !path.is_file() {
            continue;
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| invalid(&path, "its name is not UTF-8"))?
            .to_owned();
        let content = String::from_utf8(fs::read(&path).map_err(|e| with_path(e, &path))?)
            .map_err(|_| invalid(&path, "its content is not UTF-8"))?;
        files.push((name, content));
    }
    files.sort();
    Ok(files)
}

fn with_path(error: io::Error, path: &Path) -> io::Error {
    io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

fn invalid(path: &Path, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("env file {}: {why}", path.display()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Env {
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn write_files(dir: &Path, files: &[(&str, &str)]) {
        for (path, content) in files {
            let path = dir.join(path);
            fs::create_dir_all(path.parent().expect("a file has a parent")).expect("mkdir");
            fs::write(path, content).expect("write env file");
        }
    }

    #[test]
    fn env_dir_suffix_rules() {
        struct Case {
            name: &'static str,
            before: &'static [(&'static str, &'static str)],
            files: &'static [(&'static str, &'static str)],
            after: &'static [(&'static str, &'static str)],
        }
        let cases = [
            Case {
                name: "no suffix overrides",
                before: &[("A", "old")],
                files: &[("A", "new")],
                after: &[("A", "new")],
            },
            Case {
                name: "override sets an unset variable",
                before: &[],
                files: &[("A.override", "new")],
                after: &[("A", "new")],
            },
            Case {
                name: "default keeps a set variable",
                before: &[("A", "old")],
                files: &[("A.default", "new")],
                after: &[("A", "old")],
            },
            Case {
                name: "default fills an empty variable",
                before: &[("A", "")],
                files: &[("A.default", "new")],
                after: &[("A", "new")],
            },
            Case {
                name: "prepend without delim concatenates",
                before: &[("A", "old")],
                files: &[("A.prepend", "new")],
                after: &[("A", "newold")],
            },
            Case {
                name: "prepend with delim",
                before: &[("A", "old")],
                files: &[("A.prepend", "new"), ("A.delim", ":")],
                after: &[("A", "new:old")],
            },
            Case {
                name: "append with delim",
                before: &[("A", "old")],
                files: &[("A.append", "new"), ("A.delim", " ")],
                after: &[("A", "old new")],
            },
            Case {
                name: "no delim before an unset variable",
                before: &[],
                files: &[("A.append", "new"), ("A.delim", ":"), ("B.prepend", "b")],
                after: &[("A", "new"), ("B", "b")],
            },
            Case {
                name: "delim applies to its own variable only",
                before: &[("A", "a"), ("B", "b")],
                files: &[("A.delim", ","), ("B.append", "2")],
                after: &[("A", "a"), ("B", "b2")],
            },
            Case {
                name: "contents are byte-exact",
                before: &[],
                files: &[("A", " spaced \n")],
                after: &[("A", " spaced \n")],
            },
            Case {
                name: "unknown suffixes are ignored",
                before: &[],
                files: &[("A.unknown", "x"), ("B.x.override", "y")],
                after: &[],
            },
        ];
        for case in cases {
            let dir = tempfile::tempdir().expect("tempdir");
            write_files(dir.path(), case.files);
            let mut vars = env(case.before);
            apply_env_dir(&mut vars, dir.path()).expect("apply");
            assert_eq!(vars, env(case.after), "{}", case.name);
        }
    }

    #[test]
    fn operator_and_user_dirs_treat_bare_files_differently() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_files(dir.path(), &[("A", "op"), ("B", "op"), ("PATH", "/op/bin")]);

        let mut operator = env(&[("A", "set"), ("PATH", "/bin")]);
        apply_operator_env_dir(&mut operator, dir.path()).expect("apply");
        assert_eq!(
            operator,
            env(&[("A", "set"), ("B", "op"), ("PATH", "/bin")])
        );

        let mut user = env(&[("A", "set"), ("PATH", "/bin")]);
        apply_user_env_dir(&mut user, dir.path()).expect("apply");
        assert_eq!(
            user,
            env(&[("A", "op"), ("B", "op"), ("PATH", "/op/bin:/bin")])
        );
    }

    #[test]
    fn missing_directory_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut vars = env(&[("A", "a")]);
        apply_layer_env(&mut vars, &dir.path().join("absent"), Phase::Launch, None).expect("apply");
        assert_eq!(vars, env(&[("A", "a")]));
    }

    #[test]
    fn layer_precedence_by_phase_and_process() {
        struct Case {
            name: &'static str,
            phase: Phase,
            process: Option<&'static str>,
            after: &'static [(&'static str, &'static str)],
        }
        let files: &[(&str, &str)] = &[
            ("env/O", "env"),
            ("env/D.default", "env"),
            ("env/P.prepend", "env"),
            ("env/P.delim", ":"),
            ("env.build/O", "build"),
            ("env.build/D.default", "build"),
            ("env.launch/O", "launch"),
            ("env.launch/P.prepend", "launch"),
            ("env.launch/P.delim", ":"),
            ("env.launch/web/O", "web"),
            ("env.launch/web/P.prepend", "web"),
            ("env.launch/web/P.delim", ":"),
        ];
        let cases = [
            Case {
                name: "build uses env and env.build",
                phase: Phase::Build,
                process: None,
                after: &[("D", "env"), ("O", "build"), ("P", "env:base")],
            },
            Case {
                name: "launch without a process",
                phase: Phase::Launch,
                process: None,
                after: &[("D", "env"), ("O", "launch"), ("P", "launch:env:base")],
            },
            Case {
                name: "launch of web adds its directory last",
                phase: Phase::Launch,
                process: Some("web"),
                after: &[("D", "env"), ("O", "web"), ("P", "web:launch:env:base")],
            },
            Case {
                name: "another process ignores web's directory",
                phase: Phase::Launch,
                process: Some("worker"),
                after: &[("D", "env"), ("O", "launch"), ("P", "launch:env:base")],
            },
        ];
        for case in cases {
            let layer = tempfile::tempdir().expect("tempdir");
            write_files(layer.path(), files);
            let mut vars = env(&[("P", "base")]);
            apply_layer_env_files(&mut vars, layer.path(), case.phase, case.process)
                .expect("apply");
            assert_eq!(vars, env(case.after), "{}", case.name);
        }
    }

    #[test]
    fn layer_paths_by_phase() {
        let layer = tempfile::tempdir().expect("tempdir");
        for dir in ["bin", "lib", "include", "pkgconfig"] {
            fs::create_dir(layer.path().join(dir)).expect("mkdir");
        }
        let at = |sub: &str| layer.path().join(sub).display().to_string();

        let mut build = env(&[("PATH", "/usr/bin")]);
        prepend_layer_paths(&mut build, layer.path(), Phase::Build);
        assert_eq!(
            build,
            env(&[
                ("CPATH", &at("include")),
                ("LD_LIBRARY_PATH", &at("lib")),
                ("LIBRARY_PATH", &at("lib")),
                ("PATH", &format!("{}:/usr/bin", at("bin"))),
                ("PKG_CONFIG_PATH", &at("pkgconfig")),
            ])
        );

        let mut launch = env(&[("LD_LIBRARY_PATH", "/opt/lib")]);
        prepend_layer_paths(&mut launch, layer.path(), Phase::Launch);
        assert_eq!(
            launch,
            env(&[
                ("LD_LIBRARY_PATH", &format!("{}:/opt/lib", at("lib"))),
                ("PATH", &at("bin")),
            ])
        );
    }

    #[test]
    fn layers_in_order_give_spec_precedence() {
        // Two layers applied in order: the later override wins, the earlier default wins,
        // the later prepend comes first and the later append comes last.
        let layers = tempfile::tempdir().expect("tempdir");
        for (layer, value) in [("a", "1"), ("b", "2")] {
            write_files(
                &layers.path().join(layer),
                &[
                    ("env/O.override", value),
                    ("env/D.default", value),
                    ("env/P.prepend", value),
                    ("env/P.delim", ","),
                    ("env/S.append", value),
                    ("env/S.delim", ","),
                ],
            );
        }
        let mut vars = Env::new();
        for layer in ["a", "b"] {
            apply_layer_env(&mut vars, &layers.path().join(layer), Phase::Build, None)
                .expect("apply");
        }
        assert_eq!(
            vars,
            env(&[("D", "1"), ("O", "2"), ("P", "2,1"), ("S", "1,2")])
        );
    }
}
