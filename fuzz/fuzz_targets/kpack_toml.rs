//! Arbitrary text as a kpack.toml: decoding and validating it must never panic, and every
//! error it reports must render (its spans lie within the text).

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use miette::{GraphicalReportHandler, GraphicalTheme};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(error) = planner::parse(Path::new("kpack.toml"), text) {
        let mut out = String::new();
        GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor())
            .render_report(&mut out, &error)
            .expect("a config error renders");
    }
});
