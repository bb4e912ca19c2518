//! The engine: state, upstream resolution, apply and watch.
