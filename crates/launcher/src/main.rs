//! `/cnb/lifecycle/launcher`: starts a process of an app image in its launch environment
//! (platform spec, "launcher"). Built on its own by executors/build.rs, so the modules are
//! included here directly rather than through the library crate.

#[allow(dead_code)] // shared with the build phase, which uses parts the launcher does not
mod env;
mod error;
mod exec_d;
mod launch;
mod metadata;
mod process;
mod shell;
mod toml;

/// The platform spec reserves 80–89 for launcher errors; 82 is the reference launcher's.
const LAUNCH_ERROR: i32 = 82;

fn main() {
    let Err(error) = launch::launch();
    eprintln!("launcher: {error}");
    std::process::exit(LAUNCH_ERROR);
}
