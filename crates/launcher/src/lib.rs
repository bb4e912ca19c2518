//! The CNB launcher of kpackd's app images (`/cnb/lifecycle/launcher`, src/main.rs), and
//! the env-file layering (`launcher::env`) that the build phase shares with it. std only:
//! executors/build.rs compiles the binary with rustc alone into a static executable.

pub mod env;
pub mod error;
pub mod exec_d;
pub mod launch;
pub mod metadata;
pub mod process;
pub mod shell;
pub mod toml;
