//! The planner: kpack.toml, its validation, the dependency graph, and the diff that makes a Plan.
