//! slb-l4 (under construction).
