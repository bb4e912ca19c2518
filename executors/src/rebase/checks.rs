//! The preconditions a rebase checks before it writes anything: same stack, same target.

use std::collections::BTreeMap;

use crate::oci::ImageConfig;

use super::{RebaseError, RebaseRequest, DISTRO_LABELS, STACK_ID_LABEL};

/// The stack id must not change: against the request's expectation, and between the
/// app image and the new run image when both declare one.
pub(super) fn check_stack(
    req: &RebaseRequest,
    labels: &BTreeMap<String, String>,
    run_labels: &BTreeMap<String, String>,
) -> Result<(), RebaseError> {
    let run_stack = run_labels.get(STACK_ID_LABEL).filter(|s| !s.is_empty());
    let mismatch = |image_stack: &str| RebaseError::StackMismatch {
        image: req.image.to_string(),
        run_image: req.run_image.to_string(),
        image_stack: image_stack.to_string(),
        run_image_stack: run_stack.map_or("(none)", String::as_str).to_string(),
    };
    if let Some(expected) = &req.expected_stack_id {
        if run_stack != Some(expected) {
            return Err(mismatch(expected));
        }
    }
    match (
        labels.get(STACK_ID_LABEL).filter(|s| !s.is_empty()),
        run_stack,
    ) {
        (Some(app_stack), Some(run_stack)) if app_stack != run_stack => Err(mismatch(app_stack)),
        _ => Ok(()),
    }
}

/// Target data must match: os and architecture always, the variant and the distro
/// where the new run image sets them.
pub(super) fn check_target(
    req: &RebaseRequest,
    config: &ImageConfig,
    labels: &BTreeMap<String, String>,
    run_config: &ImageConfig,
    run_labels: &BTreeMap<String, String>,
) -> Result<(), RebaseError> {
    let mut pairs: Vec<(&str, Option<&str>, Option<&str>)> = vec![
        ("os", Some(&config.os), Some(&run_config.os)),
        (
            "architecture",
            Some(&config.architecture),
            Some(&run_config.architecture),
        ),
        (
            "variant",
            config.variant.as_deref(),
            run_config.variant.as_deref(),
        ),
    ];
    for label in DISTRO_LABELS {
        pairs.push((
            label,
            labels.get(label).map(String::as_str),
            run_labels.get(label).map(String::as_str),
        ));
    }
    for (target, image_value, run_value) in pairs {
        let Some(run_value) = run_value else { continue };
        if image_value != Some(run_value) {
            return Err(RebaseError::TargetMismatch {
                image: req.image.to_string(),
                run_image: req.run_image.to_string(),
                target: target.to_string(),
                image_value: image_value.unwrap_or("(none)").to_string(),
                run_image_value: run_value.to_string(),
            });
        }
    }
    Ok(())
}
