//! `kpackd inspect`: what an image in a registry or an OCI layout is made of — digest,
//! platform, layers, runtime config, labels, and the CNB metadata of images built (or
//! used) with buildpacks.

use std::fmt::Write as _;
use std::io::Write as _;

use executors::oci::{ImageStore, Inspection, StoreSettings};
use imageref::ImageRef;
use imageref::Platform;
use indicatif::HumanBytes;
use miette::{Context, IntoDiagnostic};

use super::Outcome;
use crate::cli::RegistryArgs;

/// Label values longer than this are cut in the human form (`--json` has them whole).
const LABEL_WIDTH: usize = 72;

pub fn run(
    reference: &str,
    json: bool,
    platform: &str,
    registries: &RegistryArgs,
) -> miette::Result<Outcome> {
    let r = parse_ref(reference)?;
    let platform = Platform::parse(platform).ok_or_else(|| {
        miette::miette!(
            help = "for example `linux/amd64` or `linux/arm64/v8`",
            "invalid platform `{platform}`: expected `os/arch[/variant]`"
        )
    })?;
    let store = image_store(registries, platform);
    let image = runtime()?
        .block_on(store.image(&r))
        .into_diagnostic()
        .wrap_err_with(|| format!("failed to inspect {r}"))?;
    let inspection = Inspection::of(&image);
    let out = if json {
        let mut text = serde_json::to_string_pretty(&inspection).into_diagnostic()?;
        text.push('\n');
        text
    } else {
        render(&inspection)
    };
    std::io::stdout()
        .write_all(out.as_bytes())
        .into_diagnostic()?;
    Ok(Outcome::Success)
}

/// An image reference from the command line, with a diagnostic that says what is wrong.
pub(super) fn parse_ref(reference: &str) -> miette::Result<ImageRef> {
    ImageRef::parse(reference).map_err(|e| {
        miette::miette!(
            help = "write `host[:port]/repository[:tag][@sha256:…]` or `oci:<dir>[:<ref-name>]`",
            "invalid image reference `{reference}`: {e}"
        )
    })
}

/// The store the OCI commands use: docker config credentials, the given insecure
/// registries and platform.
pub(super) fn image_store(registries: &RegistryArgs, platform: Platform) -> ImageStore {
    let defaults = StoreSettings::default();
    ImageStore::new(StoreSettings {
        insecure_registries: registries.insecure_registries.clone(),
        platform,
        connect_timeout: (registries.registry_connect_timeout).unwrap_or(defaults.connect_timeout),
        read_timeout: (registries.registry_read_timeout).unwrap_or(defaults.read_timeout),
        request_timeout: (registries.registry_request_timeout).unwrap_or(defaults.request_timeout),
        ..defaults
    })
}

/// A runtime for one command's registry and file I/O.
pub(super) fn runtime() -> miette::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .into_diagnostic()
        .wrap_err("failed to start the async runtime")
}

/// The human form: one `Key: value` block after another.
fn render(i: &Inspection) -> String {
    let mut out = String::new();
    let mut line = |key: &str, value: &dyn std::fmt::Display| {
        let _ = writeln!(out, "{:<12}{value}", format!("{key}:"));
    };
    line("Reference", &i.reference);
    line("Digest", &i.digest);
    if let Some(index) = &i.index_digest {
        line("Index", index);
    }
    line("Media type", &i.media_type);
    line("Platform", &i.platform);
    let total: u64 = i.layers.iter().map(|l| l.size).sum();
    let _ = writeln!(out, "\nLayers ({}, {}):", i.layers.len(), HumanBytes(total));
    for layer in &i.layers {
        let _ = writeln!(
            out,
            "  {}  {:>10}  {}",
            layer.digest,
            HumanBytes(layer.size).to_string(),
            layer.media_type
        );
    }
    let c = &i.config;
    let mut config = vec![
        ("User", c.user.clone()),
        ("Entrypoint", c.entrypoint.join(" ")),
        ("Cmd", c.cmd.join(" ")),
        ("WorkingDir", c.working_dir.clone()),
    ];
    for (n, env) in c.env.iter().enumerate() {
        config.push((if n == 0 { "Env" } else { "" }, env.clone()));
    }
    config.retain(|(_, value)| !value.is_empty());
    if !config.is_empty() {
        let _ = writeln!(out, "\nConfig:");
        for (key, value) in config {
            let key = if key.is_empty() {
                String::new()
            } else {
                format!("{key}:")
            };
            let _ = writeln!(out, "  {key:<12}{value}");
        }
    }
    if !i.labels.is_empty() {
        let _ = writeln!(out, "\nLabels:");
        for (key, value) in &i.labels {
            let _ = writeln!(out, "  {key}={}", shorten(value));
        }
    }
    if let Some(cnb) = &i.cnb {
        let _ = writeln!(out, "\nCloud Native Buildpacks:");
        let mut field = |key: &str, value: String| {
            let _ = writeln!(out, "  {:<16}{value}", format!("{key}:"));
        };
        if let Some(id) = &cnb.stack_id {
            field("Stack", id.clone());
        }
        if let Some(rebasable) = cnb.rebasable {
            field("Rebasable", rebasable.to_string());
        }
        if let Some(run) = &cnb.run_image {
            field("Run image", run.reference.clone());
            field("Run top layer", run.top_layer.clone());
            if let Some(image) = &run.image {
                field("Run image name", image.clone());
            }
            for mirror in &run.mirrors {
                field("Run mirror", mirror.clone());
            }
        }
        for bp in &cnb.buildpacks {
            field("Buildpack", format!("{}@{}", bp.id, bp.version));
        }
        for p in &cnb.processes {
            let default = cnb.default_process.as_deref() == Some(p.kind.as_str()) || p.default;
            let command = p.command.iter().chain(&p.args).cloned();
            field(
                "Process",
                format!(
                    "{}{}: {}",
                    p.kind,
                    if default { " (default)" } else { "" },
                    command.collect::<Vec<_>>().join(" ")
                ),
            );
        }
        if let Some(source) = &cnb.source {
            field("Source", shorten(&source.to_string()));
        }
        if let Some(launcher) = &cnb.launcher {
            field("Launcher", shorten(&launcher.to_string()));
        }
        if let Some(builder) = &cnb.builder {
            field("Builder", shorten(&builder.to_string()));
        }
    }
    out
}

fn shorten(value: &str) -> String {
    if value.chars().count() <= LABEL_WIDTH {
        return value.to_string();
    }
    let cut: String = value.chars().take(LABEL_WIDTH - 1).collect();
    format!("{cut}…")
}
