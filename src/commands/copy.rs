//! `kpackd copy`: an image, every platform of it, from a registry or OCI layout to
//! another, blobs streamed, skipped when present and mounted when they can be — with a
//! progress bar per blob in flight on a terminal.

use std::collections::HashMap;
use std::io::{IsTerminal, Write as _};
use std::sync::{Arc, Mutex};

use executors::oci::{copy_image, BlobTransfer, CopyProgress, Descriptor};
use imageref::Digest;
use imageref::Platform;
use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use miette::{Context, IntoDiagnostic};

use super::shared::{image_store, parse_ref, runtime};
use super::Outcome;
use crate::cli::RegistryArgs;

pub fn run(
    source: &str,
    destination: &str,
    registries: &RegistryArgs,
    quiet: bool,
) -> miette::Result<Outcome> {
    let src = parse_ref(source)?;
    let dst = parse_ref(destination)?;
    // A copy takes every platform of an index, so the platform is never consulted.
    let store = image_store(registries, Platform::linux_amd64());
    let progress: Arc<dyn CopyProgress> = if !quiet && std::io::stderr().is_terminal() {
        Arc::new(Bars::new())
    } else {
        Arc::new(())
    };
    let report = runtime()?
        .block_on(copy_image(&store, &src, &dst, progress))
        .into_diagnostic()
        .wrap_err_with(|| format!("failed to copy {src} to {dst}"))?;
    let count = |how: BlobTransfer| report.blobs.iter().filter(|(_, h)| *h == how).count();
    let sent: u64 = report
        .blobs
        .iter()
        .filter(|(_, how)| *how == BlobTransfer::Uploaded)
        .map(|(d, _)| d.size)
        .sum();
    if !quiet {
        let _ = writeln!(
            anstream::stderr(),
            "Copied {src} to {dst}: {} blobs ({} sent, {} mounted, {} already there), {} transferred",
            report.blobs.len(),
            count(BlobTransfer::Uploaded),
            count(BlobTransfer::Mounted),
            count(BlobTransfer::Existed),
            HumanBytes(sent),
        );
    }
    writeln!(std::io::stdout(), "{}", report.destination).into_diagnostic()?;
    Ok(Outcome::Success)
}

/// One bar per blob being transferred, gone when it is done.
struct Bars {
    multi: MultiProgress,
    style: ProgressStyle,
    bars: Mutex<HashMap<Digest, ProgressBar>>,
}

impl Bars {
    fn new() -> Bars {
        let style = ProgressStyle::with_template(
            "{prefix} [{bar:30}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec}",
        )
        .expect("the template is valid")
        .progress_chars("=> ");
        Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            style,
            bars: Mutex::new(HashMap::new()),
        }
    }

    fn bars(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, ProgressBar>> {
        self.bars
            .lock()
            .expect("no progress callback panics holding the lock")
    }
}

impl CopyProgress for Bars {
    fn blob_started(&self, blob: &Descriptor) {
        let bar = self.multi.add(ProgressBar::new(blob.size));
        bar.set_style(self.style.clone());
        bar.set_prefix(blob.digest.short().to_string());
        self.bars().insert(blob.digest.clone(), bar);
    }

    fn blob_bytes(&self, blob: &Digest, bytes: u64) {
        if let Some(bar) = self.bars().get(blob) {
            bar.inc(bytes);
        }
    }

    fn blob_finished(&self, blob: &Descriptor, _how: BlobTransfer) {
        if let Some(bar) = self.bars().remove(&blob.digest) {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
    }
}
