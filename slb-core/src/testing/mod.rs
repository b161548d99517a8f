//! Test and simulation helpers (feature `testing`), shared by slb-core's tests, other crates'
//! tests and the fuzz targets, so that they all drive the code the same way.
//!
//! - [`session_ops`]: the session-table operation language ([`SessionOp`]) and its decoder from
//!   raw bytes (what the `session_table` fuzz target and the proptest model test both feed).
//! - [`session_model`]: [`SessionModel`], which applies operations to a real
//!   [`SessionTable`](crate::session::SessionTable) and to a plain `HashMap` oracle side by side
//!   and reports the first divergence.

pub mod session_model;
pub mod session_ops;

pub use session_model::{Coverage, Divergence, SessionModel};
pub use session_ops::{KeySpec, ModelConfig, SessionOp, decode};
