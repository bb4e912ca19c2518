//! Expanding an order into the groups detect tries, composites replaced by their groups.

use super::DetectError;
use crate::lifecycle::descriptor::{OrderEntry, OrderGroup};
use crate::lifecycle::phase::BuildpackDir;

/// Orders that expand into more groups than this are refused.
pub(super) const MAX_GROUPS: usize = 10_000;

/// One element of an expanded group: a component buildpack (index into the context's
/// buildpacks) and whether it is optional.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupElement {
    pub buildpack: usize,
    pub optional: bool,
}

/// Expands an order into the groups of component buildpacks to try, in order: composite
/// buildpacks are replaced by each group of their order in turn (depth-first, left to
/// right); an optional composite also yields the group without it, after the others. A
/// buildpack id already in a group is not added again. Optional component buildpacks stay
/// in the group marked optional: detect drops them when they fail or their plan is unmet.
pub fn expand_order(
    order: &[OrderGroup],
    buildpacks: &[BuildpackDir],
) -> Result<Vec<Vec<GroupElement>>, DetectError> {
    let mut groups = Vec::new();
    for group in order {
        for expanded in expand_group(&group.group, buildpacks, 0)? {
            if !groups.contains(&expanded) {
                groups.push(expanded);
            }
            if groups.len() > MAX_GROUPS {
                return Err(DetectError::TooManyGroups);
            }
        }
    }
    Ok(groups)
}

fn expand_group(
    entries: &[OrderEntry],
    buildpacks: &[BuildpackDir],
    depth: usize,
) -> Result<Vec<Vec<GroupElement>>, DetectError> {
    let mut groups: Vec<Vec<GroupElement>> = vec![Vec::new()];
    for entry in entries {
        let index = find_buildpack(entry, buildpacks)?;
        let bp = &buildpacks[index];
        let alternatives: Vec<Vec<GroupElement>> = if bp.descriptor.is_composite() {
            if depth > 16 {
                return Err(DetectError::OrderTooDeep {
                    id: bp.id().to_owned(),
                });
            }
            let mut alternatives = Vec::new();
            for sub in &bp.descriptor.order {
                alternatives.extend(expand_group(&sub.group, buildpacks, depth + 1)?);
            }
            if entry.optional {
                alternatives.push(Vec::new());
            }
            alternatives
        } else {
            vec![vec![GroupElement {
                buildpack: index,
                optional: entry.optional,
            }]]
        };
        let mut next = Vec::with_capacity(groups.len() * alternatives.len());
        for prefix in &groups {
            for alternative in &alternatives {
                let mut group = prefix.clone();
                for el in alternative {
                    let id = buildpacks[el.buildpack].id();
                    if !group.iter().any(|g| buildpacks[g.buildpack].id() == id) {
                        group.push(*el);
                    }
                }
                next.push(group);
            }
            if next.len() > MAX_GROUPS {
                return Err(DetectError::TooManyGroups);
            }
        }
        groups = next;
    }
    Ok(groups)
}

fn find_buildpack(entry: &OrderEntry, buildpacks: &[BuildpackDir]) -> Result<usize, DetectError> {
    let mut candidates = buildpacks
        .iter()
        .enumerate()
        .filter(|(_, bp)| bp.id() == entry.id);
    if !entry.version.is_empty() {
        return candidates
            .find(|(_, bp)| bp.version() == entry.version)
            .map(|(i, _)| i)
            .ok_or_else(|| DetectError::UnknownBuildpack {
                id: entry.id.clone(),
                version: entry.version.clone(),
            });
    }
    let all: Vec<(usize, &BuildpackDir)> = candidates.collect();
    match all.as_slice() {
        [] => Err(DetectError::UnknownBuildpack {
            id: entry.id.clone(),
            version: String::new(),
        }),
        [(i, _)] => Ok(*i),
        many => Err(DetectError::AmbiguousBuildpack {
            id: entry.id.clone(),
            versions: many
                .iter()
                .map(|(_, bp)| bp.version())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::lifecycle::descriptor::{BuildpackDescriptor, BuildpackInfo};

    pub(in crate::lifecycle::detect) fn bp(id: &str, order: &[&[(&str, bool)]]) -> BuildpackDir {
        BuildpackDir {
            path: PathBuf::from("/nonexistent").join(id),
            descriptor: BuildpackDescriptor {
                api: "0.10".into(),
                buildpack: BuildpackInfo {
                    id: id.into(),
                    version: "1".into(),
                    ..BuildpackInfo::default()
                },
                order: order
                    .iter()
                    .map(|g| OrderGroup {
                        group: g
                            .iter()
                            .map(|(id, optional)| entry(id, *optional))
                            .collect(),
                    })
                    .collect(),
                ..BuildpackDescriptor::default()
            },
        }
    }

    fn entry(id: &str, optional: bool) -> OrderEntry {
        OrderEntry {
            id: id.into(),
            version: String::new(),
            optional,
        }
    }

    fn ids(groups: &[Vec<GroupElement>], bps: &[BuildpackDir]) -> Vec<String> {
        groups
            .iter()
            .map(|g| {
                g.iter()
                    .map(|e| {
                        let id = bps[e.buildpack].id().to_owned();
                        if e.optional {
                            format!("{id}?")
                        } else {
                            id
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect()
    }

    #[test]
    fn order_expansion_matches_the_spec() {
        let bps = vec![
            bp("A", &[]),
            bp("B", &[]),
            bp("C", &[]),
            bp("D", &[]),
            bp("E", &[]),
            bp("F", &[]),
            bp("G", &[]),
            bp("H", &[]),
            bp(
                "O",
                &[&[("A", false), ("B", false)], &[("C", false), ("D", false)]],
            ),
            bp(
                "P",
                &[&[("E", false), ("F", false)], &[("G", false), ("H", false)]],
            ),
            bp("N", &[&[("O", false), ("A", true)]]),
        ];
        let order = |entries: &[(&str, bool)]| {
            vec![OrderGroup {
                group: entries.iter().map(|(id, o)| entry(id, *o)).collect(),
            }]
        };
        let groups = expand_order(&order(&[("E", false), ("O", false), ("F", false)]), &bps)
            .expect("expand");
        assert_eq!(ids(&groups, &bps), ["E,A,B,F", "E,C,D,F"]);
        let groups = expand_order(&order(&[("O", false), ("P", false)]), &bps).expect("expand");
        assert_eq!(
            ids(&groups, &bps),
            ["A,B,E,F", "A,B,G,H", "C,D,E,F", "C,D,G,H"]
        );
        // An optional composite: its groups, then the group without it.
        let groups = expand_order(&order(&[("E", false), ("O", true)]), &bps).expect("expand");
        assert_eq!(ids(&groups, &bps), ["E,A,B", "E,C,D", "E"]);
        // Nested composites; an id already in the group is not added twice.
        let groups = expand_order(&order(&[("N", false), ("B", true)]), &bps).expect("expand");
        assert_eq!(ids(&groups, &bps), ["A,B", "C,D,A?,B?"]);
        let err = expand_order(&order(&[("Z", false)]), &bps).expect_err("unknown");
        assert!(err.to_string().contains("Z"), "{err}");
    }
}
