//! slb-l4 (under construction).

#[cfg(feature = "lab")]
pub mod lab;
