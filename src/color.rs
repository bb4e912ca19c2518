//! When output gets colours: `--color`, else a terminal without `NO_COLOR`. Decided here
//! only, for stdout (plans, summaries) and stderr (diagnostics, logs) alike.

use std::io::IsTerminal;

use crate::cli::ColorChoice;

/// Whether `stream` gets colours under `choice`.
pub fn enabled(choice: ColorChoice, stream: &impl IsTerminal) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && stream.is_terminal()
        }
    }
}

/// Sets colours for every output (anstream, miette) and says whether stderr gets them.
pub fn setup(choice: ColorChoice) -> bool {
    let anstream_choice = match choice {
        ColorChoice::Auto => anstream::ColorChoice::Auto,
        ColorChoice::Always => anstream::ColorChoice::Always,
        ColorChoice::Never => anstream::ColorChoice::Never,
    };
    anstream_choice.write_global();
    let color = enabled(choice, &std::io::stderr());
    // The hook can only be installed once per process, and this is the only place.
    let _ = miette::set_hook(Box::new(move |_| {
        Box::new(
            miette::MietteHandlerOpts::new()
                .color(color)
                .unicode(color)
                .terminal_links(false)
                .build(),
        )
    }));
    color
}
