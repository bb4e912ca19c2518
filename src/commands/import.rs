//! `kpackd import`: kpack resources, a pack builder.toml or project.toml files, as the
//! kpack.toml tables they amount to; on stdout, or added to a kpack.toml with `--into`.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use miette::{Context, IntoDiagnostic};

use super::Outcome;
use crate::import::{self, Existing, Input, Target};

pub fn run(files: &[PathBuf], into: Option<&Path>) -> miette::Result<Outcome> {
    let cwd = std::env::current_dir()
        .into_diagnostic()
        .wrap_err("cannot read the current directory")?;
    let inputs = files
        .iter()
        .map(|file| read_input(file, &cwd))
        .collect::<miette::Result<Vec<_>>>()?;
    let Some(into) = into else {
        let target = Target {
            dir: cwd.clone(),
            existing: Existing::default(),
        };
        let text = import::import(&inputs, &target)?;
        std::io::stdout()
            .write_all(text.as_bytes())
            .into_diagnostic()?;
        // The output is meant to validate where it is run; say so when it does not.
        if let Err(e) = planner::parse(&cwd.join("kpack.toml"), &text) {
            let _ = writeln!(
                anstream::stderr(),
                "warning: the imported kpack.toml does not validate here yet:\n{:?}",
                miette::Report::new(e)
            );
            return Ok(Outcome::Failed);
        }
        return Ok(Outcome::Success);
    };
    let existing_text = match std::fs::read_to_string(into) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(e)
                .into_diagnostic()
                .wrap_err_with(|| format!("cannot read {}", into.display()))
        }
    };
    let existing = Existing::of(&existing_text).map_err(|e| {
        miette::miette!(
            help = "fix it first (`kpackd validate`), then import into it",
            "{} is not valid TOML: {}",
            into.display(),
            e.message()
        )
    })?;
    let dir = std::path::absolute(
        into.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
    )
    .into_diagnostic()?;
    let target = Target { dir, existing };
    let added = import::import(&inputs, &target)?;
    let mut merged = existing_text.clone();
    if !merged.is_empty() && !merged.ends_with('\n') {
        merged.push('\n');
    }
    merged.push_str(&added);
    // Appending leaves every byte of the file as it was; it must still be one document.
    if let Err(e) = toml::from_str::<toml::Table>(&merged) {
        return Err(miette::miette!(
            help = "sections written as inline tables (`stacks = { … }`) cannot take more tables; write them as `[stacks.NAME]`",
            "the new tables do not fit into {}: {}",
            into.display(),
            e.message()
        ));
    }
    let was_valid = existing_text.is_empty() || planner::parse(into, &existing_text).is_ok();
    if was_valid {
        if let Err(e) = planner::parse(into, &merged) {
            return Err(miette::Report::new(e).wrap_err(format!(
                "{} would not validate with the imported tables; it was left as it was",
                into.display()
            )));
        }
    }
    write_atomically(into, &merged)?;
    let _ = writeln!(
        anstream::stderr(),
        "added the imported tables to {}",
        into.display()
    );
    Ok(Outcome::Success)
}

/// Reads `file` (`-`: stdin) as an import input.
fn read_input(file: &Path, cwd: &Path) -> miette::Result<Input> {
    if file == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .into_diagnostic()
            .wrap_err("cannot read stdin")?;
        return Ok(Input {
            name: "-".to_string(),
            dir: cwd.to_path_buf(),
            text,
        });
    }
    let text = std::fs::read_to_string(file)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot read {}", file.display()))?;
    let parent = file.parent().filter(|p| !p.as_os_str().is_empty());
    Ok(Input {
        name: file.display().to_string(),
        dir: cwd.join(parent.unwrap_or(Path::new("."))),
        text,
    })
}

/// Writes `text` to a file beside `path`, then renames it over `path`: a reader sees the
/// old file or the new one, never half of one.
fn write_atomically(path: &Path, text: &str) -> miette::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "kpack.toml".to_string());
    let tmp = path.with_file_name(format!(".{name}.import-{}", std::process::id()));
    std::fs::write(&tmp, text)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .into_diagnostic()
        .wrap_err_with(|| {
            let _ = std::fs::remove_file(&tmp);
            format!("cannot write {}", path.display())
        })
}
