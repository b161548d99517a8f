//! slb-sync (under construction).
