//! The engine: state, upstream resolution, apply and watch.

#![forbid(unsafe_code)]

pub mod apply;
pub mod desired;
pub mod layout;
pub mod logs;
pub mod planning;
pub mod reconcile;
pub mod resolve;
pub mod state;
pub mod watch;
