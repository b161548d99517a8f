//! The I/O half of health checking.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

/// What one probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeResult {
    /// The backend answered as expected.
    Healthy,
    /// It did not; the reason is for logs and the status page.
    Unhealthy(String),
}

impl ProbeResult {
    /// True for [`ProbeResult::Healthy`].
    pub fn is_healthy(&self) -> bool {
        matches!(self, ProbeResult::Healthy)
    }
}

/// The future a probe returns: boxed so that the trait stays object-safe and names no runtime.
pub type ProbeFuture<'a> = Pin<Box<dyn Future<Output = ProbeResult> + Send + 'a>>;

/// Checks one backend once. Implementations (TCP connect, HTTP request, TLS hello, ...) live in
/// the dataplane crates and in applications; the timeout is the implementation's to enforce
/// (it receives it from the [`HealthConfig`](super::HealthConfig) of the pool).
pub trait HealthProbe: Send + Sync {
    /// Probes `target`.
    fn probe(&self, target: SocketAddr) -> ProbeFuture<'_>;
}
