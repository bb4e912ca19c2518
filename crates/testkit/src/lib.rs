//! Real components for kpackd's tests, started on loopback: an OCI registry, git
//! remotes, minimal stack root filesystems. Nothing here is a mock: a test that needs a
//! component that is not installed fails with a message naming the Debian package.

#![forbid(unsafe_code)]

pub mod entrypoint;
pub mod fixtures;
pub mod git;
pub mod kube;
pub mod registry;
pub mod rootfs;

pub use entrypoint::entrypoint;

/// Panics with the Debian package to install when `program` is not on PATH.
pub fn require(program: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()));
    assert!(
        found,
        "`{program}` is not installed: apt-get install -y {package} (scripts/test does this)"
    );
}

/// A TCP port on 127.0.0.1 that nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral port on loopback")
}
