//! What one HTTP client can hold of the watch daemon: how long it may take to send a
//! request, and how many connections may be open at once.
//!
//! Every connection costs a file descriptor, and the daemon needs descriptors for its
//! builds, so open connections are capped ([`HttpLimits::max_connections`]). A new
//! connection over the cap closes the oldest *idle* one (no request being handled:
//! still waiting for its headers, or kept alive between requests) to make room, so a
//! client that opens many connections and stays silent can neither exhaust descriptors
//! nor lock out a `/healthz` probe or a webhook. When every connection is busy handling
//! a request, the new one is closed at once; busy connections end within the body
//! timeout plus the (short) time a handler takes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Bounds on what HTTP clients of watch mode can hold. The defaults suit a daemon behind
/// a reverse proxy or on loopback; tests shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Open connections at most; see the module documentation for what happens beyond.
    pub max_connections: usize,
    /// How long a client gets to send a request's headers, counted from the moment the
    /// connection waits for them: a new connection, or a kept-alive one after its
    /// previous response. It is thus also the idle timeout of kept-alive connections.
    pub header_timeout: Duration,
    /// How long a client gets to send a request's body once its headers are in (408).
    pub body_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> HttpLimits {
        HttpLimits {
            max_connections: 128,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
        }
    }
}

/// The open connections, oldest first.
#[derive(Debug)]
pub(crate) struct Connections {
    max: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    next_id: u64,
    slots: BTreeMap<u64, Slot>,
}

#[derive(Debug)]
struct Slot {
    /// Requests of this connection being handled (HTTP/1 handles one at a time).
    busy: usize,
    /// Fired to close the connection.
    close: CancellationToken,
}

impl Connections {
    pub(crate) fn new(max: usize) -> Arc<Connections> {
        Arc::new(Connections {
            max: max.max(1),
            open: Mutex::new(Open::default()),
        })
    }

    /// A slot for a new connection, closing the oldest idle one when all are taken;
    /// None when every open connection is handling a request.
    pub(crate) fn admit(self: &Arc<Self>) -> Option<Ticket> {
        let mut open = self.lock();
        if open.slots.len() >= self.max {
            let oldest_idle = open
                .slots
                .iter()
                .find(|(_, slot)| slot.busy == 0)
                .map(|(id, _)| *id)?;
            if let Some(slot) = open.slots.remove(&oldest_idle) {
                tracing::debug!("{} connections open: closing the oldest idle one", self.max);
                slot.close.cancel();
            }
        }
        let id = open.next_id;
        open.next_id += 1;
        let close = CancellationToken::new();
        open.slots.insert(
            id,
            Slot {
                busy: 0,
                close: close.clone(),
            },
        );
        Some(Ticket {
            connections: self.clone(),
            id,
            close,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        // The map stays consistent whatever panicked while holding it.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_busy(&self, id: u64, change: impl FnOnce(&mut usize)) {
        if let Some(slot) = self.lock().slots.get_mut(&id) {
            change(&mut slot.busy);
        }
    }
}

/// One admitted connection's slot, given back when dropped.
#[derive(Debug)]
pub(crate) struct Ticket {
    connections: Arc<Connections>,
    id: u64,
    close: CancellationToken,
}

impl Ticket {
    /// Fires when the connection must close to make room for a newer one.
    pub(crate) fn evicted(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.close.cancelled()
    }

    /// Marks the connection busy until the returned guard drops.
    pub(crate) fn handling(&self) -> Handling {
        self.connections.set_busy(self.id, |busy| *busy += 1);
        Handling {
            connections: self.connections.clone(),
            id: self.id,
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.connections.lock().slots.remove(&self.id);
    }
}

/// A request being handled on one connection.
pub(crate) struct Handling {
    connections: Arc<Connections>,
    id: u64,
}

impl Drop for Handling {
    fn drop(&mut self) {
        self.connections
            .set_busy(self.id, |busy| *busy = busy.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_idle_connection_makes_room() {
        let connections = Connections::new(2);
        let first = connections.admit().unwrap();
        let second = connections.admit().unwrap();
        let busy = first.handling();
        let third = connections.admit().expect("the second one is idle");
        assert!(second.close.is_cancelled());
        assert!(!first.close.is_cancelled());
        // Both open ones busy: the next is refused.
        let _busy_too = third.handling();
        assert!(connections.admit().is_none());
        drop(busy);
        let _fourth = connections.admit().expect("the first one is idle again");
        assert!(first.close.is_cancelled());
        drop(second);
        assert_eq!(connections.lock().slots.len(), 2);
    }
}
