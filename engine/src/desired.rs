//! What kpack.toml wants for each image, in the planner's terms ([`Desired`]): its
//! configuration hash (the CONFIG reason), its source's identity, its builder and stack,
//! and the buildpacks the builder provides now; and for each published builder, what its
//! builder image would be made from ([`DesiredBuilder`]).

use imageref::Target;
use planner::diff::{Desired, DesiredBuilder};
use planner::plan::StackKey;
use planner::{Builder, BuilderKind, Config, Image};

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

/// One [`DesiredBuilder`] per builder in `published` (assembled builders with a tag),
/// in the order given. What the resolution could not find is left empty: the planner
/// blocks those builders on the recorded failure.
pub fn desired_builders(
    config: &Config,
    published: &[&Builder],
    resolution: &Resolution,
) -> Vec<DesiredBuilder> {
    published
        .iter()
        .filter_map(|builder| {
            let BuilderKind::Assembled { stack, order, .. } = &builder.kind else {
                return None;
            };
            let tag = builder.tag.as_ref()?;
            let stack_config = config.stacks.get(stack)?;
            let stack = StackKey::stack(stack);
            Some(DesiredBuilder {
                builder: builder.name.clone(),
                tag: tag.to_string(),
                stack_id: resolution
                    .stacks
                    .get(&stack)
                    .map(|p| p.stack_id.clone())
                    .unwrap_or_default(),
                run_image: stack_config.run_image.to_string(),
                run_image_mirrors: stack_config
                    .run_image_mirrors
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                order: DesiredBuilder::order_of(order),
                buildpacks: resolution
                    .buildpacks
                    .get(&builder.name)
                    .map(|pins| {
                        pins.iter()
                            .map(|(id, pin)| (id.clone(), pin.digest.clone()))
                            .collect()
                    })
                    .unwrap_or_default(),
                lifecycle: builder.lifecycle.is_some(),
                lifecycle_image: resolution
                    .lifecycles
                    .get(&builder.name)
                    .map(|pin| pin.digest.clone()),
                entrypoint: resolution.entrypoint.as_ref().map(|e| e.digest.clone()),
                stack,
            })
        })
        .collect()
}
