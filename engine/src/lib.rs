//! The engine: state, upstream resolution, apply and watch.

pub mod desired;
pub mod logs;
pub mod planning;
pub mod resolve;
pub mod state;
pub mod watch;
