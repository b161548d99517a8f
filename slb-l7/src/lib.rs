//! slb-l7 (under construction).
