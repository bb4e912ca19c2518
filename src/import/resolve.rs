//! Settles names and references: every table gets a kpackd name no other has (nor the
//! kpack.toml being added to), every reference the name of the table it means, and a
//! reference to something not imported a placeholder table that says so.

use std::collections::BTreeSet;

use super::model::{
    Builder, BuildpackResource, Fleet, GroupEntry, Origin, Ref, Stack, Store, StoreEntry, Table,
};
use super::Existing;

/// Where placeholders point: a reserved domain, so that nothing is ever pulled from it.
const PLACEHOLDER: &str = "registry.invalid/replace-me";

pub fn resolve(fleet: &mut Fleet, existing: &Existing) {
    name_all(&mut fleet.stacks, &existing.stacks);
    name_all(&mut fleet.stores, &existing.stores);
    name_all(&mut fleet.builders, &existing.builders);
    name_all(&mut fleet.images, &existing.images);
    builders(fleet, existing);
    images(fleet, existing);
}

/// Names each table: its wanted name; `<namespace>-<name>` when that is taken by a table
/// of another namespace; then `-2`, `-3`… when still taken.
fn name_all<T>(tables: &mut [Table<T>], existing: &BTreeSet<String>) {
    let clashing: BTreeSet<String> = {
        let mut seen: Vec<(&str, Option<&str>)> = Vec::new();
        let mut clash = BTreeSet::new();
        for t in tables.iter() {
            if seen
                .iter()
                .any(|(w, ns)| *w == t.wanted && *ns != t.origin.namespace.as_deref())
            {
                clash.insert(t.wanted.clone());
            }
            seen.push((&t.wanted, t.origin.namespace.as_deref()));
        }
        clash
    };
    let mut taken = existing.clone();
    for t in tables.iter_mut() {
        let mut base = t.wanted.clone();
        if let (true, Some(ns)) = (clashing.contains(&base), &t.origin.namespace) {
            base = super::kpackd_name(&format!("{ns}-{base}"), &base);
        }
        let mut name = base.clone();
        let mut n = 2;
        while taken.contains(&name) {
            name = format!("{base}-{n}");
            n += 1;
        }
        if name != base && existing.contains(&base) {
            t.notes.push(format!(
                "named `{name}`: the kpack.toml already has a `{base}`"
            ));
        }
        taken.insert(name.clone());
        t.name = name;
    }
}

/// The name of the table `to` means, if it was imported.
fn find<T>(tables: &[Table<T>], to: &Origin) -> Option<String> {
    tables
        .iter()
        .find(|t| t.origin == *to)
        .map(|t| t.name.clone())
}

/// Settles `r` to an imported table, a table of the same name already in the kpack.toml,
/// or a new placeholder made by `placeholder`.
fn settle<T>(
    r: &mut Ref,
    tables: &mut Vec<Table<T>>,
    existing: &BTreeSet<String>,
    placeholder: impl FnOnce(&str) -> (T, String),
) {
    if let Some(name) = find(tables, &r.to) {
        r.name = name;
        return;
    }
    let wanted = super::kpackd_name(&r.to.name, "missing");
    if existing.contains(&wanted) {
        r.name = wanted;
        return;
    }
    let (spec, note) = placeholder(&wanted);
    let mut table = Table::new(r.to.clone(), wanted, spec);
    table.heading = Some(format!(
        "placeholder: {} is not among the inputs. {note}",
        r.to.describe()
    ));
    table.name = table.wanted.clone();
    let mut n = 2;
    while tables.iter().any(|t| t.name == table.name) || existing.contains(&table.name) {
        table.name = format!("{}-{n}", table.wanted);
        n += 1;
    }
    r.name = table.name.clone();
    tables.push(table);
}

fn builders(fleet: &mut Fleet, existing: &Existing) {
    for i in 0..fleet.builders.len() {
        let builder_name = fleet.builders[i].name.clone();
        let namespace = fleet.builders[i].origin.namespace.clone();
        let Builder::Assembled {
            stack,
            store,
            order,
            ..
        } = &mut fleet.builders[i].spec
        else {
            continue;
        };
        settle(stack, &mut fleet.stacks, &existing.stacks, |name| {
            (
                Stack {
                    build_image: format!("{PLACEHOLDER}/{name}-build"),
                    run_image: format!("{PLACEHOLDER}/{name}-run"),
                    run_image_mirrors: Vec::new(),
                    id: None,
                },
                "Import it too, or set its build and run images".to_string(),
            )
        });
        let mut notes = Vec::new();
        if store.is_none() && order.iter().flatten().any(|e| e.buildpack.is_some()) {
            *store = Some(new_store(&mut fleet.stores, existing, &builder_name));
        }
        if let Some(store) = store.as_mut() {
            settle(store, &mut fleet.stores, &existing.stores, |_| {
                (
                    Store {
                        buildpacks: vec![StoreEntry::Image(format!("{PLACEHOLDER}/buildpacks"))],
                    },
                    "Import it too, or list its buildpacks".to_string(),
                )
            });
        }
        for entry in order.iter_mut().flatten() {
            order_entry(
                entry,
                namespace.as_deref(),
                store.as_ref(),
                &fleet.buildpacks,
                &mut fleet.stores,
                &mut notes,
            );
        }
        fleet.builders[i].notes.extend(notes);
    }
}

/// A store table for the buildpacks builder `builder_name` names by kind and name, named
/// so that it clashes with none; a reference to it.
fn new_store(stores: &mut Vec<Table<Store>>, existing: &Existing, builder_name: &str) -> Ref {
    let mut table = Table::new(
        Origin::new("store of", builder_name, None),
        builder_name.to_owned(),
        Store {
            buildpacks: Vec::new(),
        },
    );
    table.heading = Some(format!(
        "the buildpacks builder `{builder_name}` names by kind and name"
    ));
    let mut r = Ref::new(table.origin.clone());
    let mut taken = existing.stores.clone();
    taken.extend(stores.iter().map(|s| s.name.clone()));
    name_all(std::slice::from_mut(&mut table), &taken);
    r.name = table.name.clone();
    stores.push(table);
    r
}

/// Settles one order entry of a builder in `namespace`: an entry naming a buildpack
/// resource gets its id, and the resource's image goes into the builder's `store`; what
/// cannot be settled becomes a note.
fn order_entry(
    entry: &mut GroupEntry,
    namespace: Option<&str>,
    store: Option<&Ref>,
    buildpacks: &[BuildpackResource],
    stores: &mut [Table<Store>],
    notes: &mut Vec<String>,
) {
    let Some(bp) = &entry.buildpack else {
        return;
    };
    // A namespaced Builder sees its namespace's Buildpacks first.
    let mut wanted = bp.clone();
    if bp.kind == "Buildpack" {
        wanted.namespace = namespace.map(str::to_owned);
    }
    let found = buildpacks
        .iter()
        .find(|r| r.origin == wanted)
        .map(|r| r.image.clone());
    let what = wanted.describe();
    match (&found, &entry.id) {
        (Some(image), None) => notes.push(format!(
            "order: `{}` stands for {what} (`{image}`); write the id that image provides (`kpackd inspect {image}` shows it)",
            bp.name
        )),
        (None, _) => notes.push(format!(
            "order: {what} is not among the inputs; add its image to the store"
        )),
        _ => {}
    }
    if entry.id.is_none() {
        entry.id = Some(bp.name.clone());
    }
    let (Some(image), Some(store)) = (found, store) else {
        return;
    };
    match stores.iter_mut().find(|s| s.name == store.name) {
        Some(table) => {
            let entry = StoreEntry::Image(image);
            if !table.spec.buildpacks.contains(&entry) {
                table.spec.buildpacks.push(entry);
            }
        }
        None => notes.push(format!(
            "order: add `{{ image = \"{image}\" }}` ({what}) to store `{}`",
            store.name
        )),
    }
}

fn images(fleet: &mut Fleet, existing: &Existing) {
    for i in 0..fleet.images.len() {
        let image = &mut fleet.images[i];
        match &mut image.spec.builder {
            Some(r) => settle(r, &mut fleet.builders, &existing.builders, |name| {
                (
                    Builder::Image(format!("{PLACEHOLDER}/{name}")),
                    "Import it too, or set `builder` to its builder image (in kpack, its `status.latestImage`)".to_string(),
                )
            }),
            None => {
                let names: Vec<String> = fleet
                    .builders
                    .iter()
                    .map(|b| b.name.clone())
                    .chain(existing.builders.iter().cloned())
                    .collect();
                let mut r = Ref::new(Origin::new("builder", "builder", None));
                match names.as_slice() {
                    [] => settle(&mut r, &mut fleet.builders, &existing.builders, |_| {
                        (
                            Builder::Image(format!("{PLACEHOLDER}/builder")),
                            "The project names no builder: set a builder image, such as `paketobuildpacks/builder-jammy-base`, or import a builder.toml with it".to_string(),
                        )
                    }),
                    [one] => r.name = one.clone(),
                    [first, ..] => {
                        image.notes.push(format!(
                            "builder: the project names none; `{first}` is the first of {}",
                            names.join(", ")
                        ));
                        r.name = first.clone();
                    }
                }
                image.spec.builder = Some(r);
            }
        }
    }
}
