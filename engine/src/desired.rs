//! What kpack.toml wants for each image, in the planner's terms ([`Desired`]): its
//! configuration hash (the CONFIG reason), its source's identity, its builder and stack,
//! and the buildpacks the builder provides now.

use imageref::Target;
use planner::diff::Desired;
use planner::plan::StackKey;
use planner::{BuilderKind, Config, Image};

use crate::resolve::Resolution;

/// The stack an image's builder builds on: a stack of kpack.toml, or the builder
/// image's own.
pub fn stack_of(config: &Config, image: &Image) -> StackKey {
    match config.builders.get(&image.builder).map(|b| &b.kind) {
        Some(BuilderKind::Assembled { stack, .. }) => StackKey::stack(stack),
        _ => StackKey::builder(&image.builder),
    }
}

/// One [`Desired`] per image, in the order given. Values the resolution could not find
/// (a stack whose run image failed) are left empty: the planner blocks those images on
/// the recorded failure.
pub fn desired(config: &Config, images: &[&Image], resolution: &Resolution) -> Vec<Desired> {
    images
        .iter()
        .map(|image| {
            let stack = stack_of(config, image);
            let pin = resolution.stacks.get(&stack);
            Desired {
                image: image.name.clone(),
                config: image.config().digest(),
                source: image.source.identity(),
                builder: image.builder.clone(),
                stack_id: pin.map(|p| p.stack_id.clone()).unwrap_or_default(),
                target: pin.map(|p| p.target.clone()).unwrap_or_else(|| Target {
                    os: config.settings.platform.os.clone(),
                    arch: config.settings.platform.architecture.clone(),
                    variant: config.settings.platform.variant.clone(),
                }),
                stack,
                buildpacks: resolution
                    .buildpacks
                    .get(&image.builder)
                    .map(|pins| {
                        pins.iter()
                            .map(|(id, pin)| (id.clone(), pin.digest.clone()))
                            .collect()
                    })
                    .unwrap_or_default(),
                rebuild_on: image.rebuild_on.clone(),
                image_buildpacks: image.config().buildpacks,
            }
        })
        .collect()
}
