//! Executors: OCI images, sources, the CNB lifecycle, the sandbox and rebase.
