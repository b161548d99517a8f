//! Which node answers for which address: address groups, liveness and readiness.
//!
//! An [`AddrGroup`] is held by its home node while that node is alive and ready, else by the
//! lowest-numbered node that is (every node computes the same answer from the same view; views
//! differ only while a change propagates, and then both candidates hold the sessions, so either
//! forwards the flow). A node is "live" here when its heartbeats arrive and it is not joining
//! (still receiving its table); this node is live once its engine is ready. While the node a
//! group waits for is joining (its home restarting, or a lower-numbered node at a cold start),
//! whoever holds the group keeps it and nobody else takes it: two nodes answering ARP for one
//! address at once would split a new connection's packets between them before it is synced.
//!
//! Addresses of the forwarder's own configuration (VIPs, FULLNAT local addresses) that no group
//! lists form an implicit group homed here that no other node takes: quiet until ready.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use slb_sync::{NodeId, PeerInfo};

use crate::fwd::Forwarder;

/// Addresses that move together between nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddrGroup {
    /// The node that holds them whenever it is alive and ready (FULLNAT: the node whose local
    /// addresses they are); `None`: always the lowest-numbered live node (NAT active-standby
    /// floating addresses).
    pub home: Option<NodeId>,
    /// The addresses.
    pub addrs: Vec<IpAddr>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PeerView {
    alive: bool,
    joining: bool,
}

/// What [`Takeover::apply`] changed.
#[derive(Debug, Default)]
pub(super) struct Change {
    pub(super) taken: Vec<IpAddr>,
    pub(super) released: Vec<IpAddr>,
}

#[derive(Debug)]
pub(super) struct Takeover {
    me: NodeId,
    ready: bool,
    groups: Vec<AddrGroup>,
    own: HashSet<IpAddr>,
    peers: BTreeMap<NodeId, PeerView>,
    held: HashSet<IpAddr>,
}

impl Takeover {
    /// Quiets every address this node may answer for until it is ready.
    pub(super) fn new(me: NodeId, mut groups: Vec<AddrGroup>, fwd: &mut Forwarder) -> Self {
        let own: HashSet<IpAddr> = fwd.own_addrs().into_iter().collect();
        let listed: HashSet<IpAddr> = groups.iter().flat_map(|g| g.addrs.iter().copied()).collect();
        let mut implicit: Vec<IpAddr> =
            own.iter().copied().filter(|a| !listed.contains(a)).collect();
        implicit.sort();
        for ip in &own {
            fwd.set_quiet(*ip, true);
        }
        if !implicit.is_empty() {
            groups.push(AddrGroup { home: Some(me), addrs: implicit });
        }
        Takeover { me, ready: false, groups, own, peers: BTreeMap::new(), held: HashSet::new() }
    }

    pub(super) fn held(&self) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = self.held.iter().copied().collect();
        v.sort();
        v
    }

    pub(super) fn set_ready(&mut self, ready: bool) {
        self.ready = ready;
    }

    /// A peer was heard (again): alive, and assumed joining until its datagrams say otherwise.
    pub(super) fn peer_up(&mut self, node: NodeId) {
        self.peers.insert(node, PeerView { alive: true, joining: true });
    }

    pub(super) fn peer_down(&mut self, node: NodeId) {
        if let Some(p) = self.peers.get_mut(&node) {
            p.alive = false;
        }
    }

    /// Takes the engine's view of the peers; true if anything changed.
    pub(super) fn update(&mut self, peers: &[PeerInfo]) -> bool {
        let mut changed = false;
        for p in peers {
            let v = PeerView { alive: p.alive, joining: p.joining };
            if self.peers.insert(p.node, v) != Some(v) {
                changed = true;
            }
        }
        changed
    }

    fn live(&self, n: NodeId) -> bool {
        if n == self.me {
            return self.ready;
        }
        self.peers.get(&n).is_some_and(|p| p.alive && !p.joining)
    }

    /// Alive but still receiving its table (a peer that restarts, or every node at a cold start).
    fn joining(&self, n: NodeId) -> bool {
        if n == self.me {
            return !self.ready;
        }
        self.peers.get(&n).is_some_and(|p| p.alive && p.joining)
    }

    /// Whether this node should answer for group `g`, given whether it does now (`held`):
    /// the home node while it is live; while the home node is joining, whoever holds the group
    /// keeps it and nobody else takes it; otherwise the lowest-numbered live node, except that
    /// a node does not take a group from under a lower-numbered node that is joining (at a
    /// cold start every node joins at once, and the lowest one will hold it shortly).
    fn should_hold(&self, g: &AddrGroup, held: bool) -> bool {
        if let Some(h) = g.home {
            if self.live(h) {
                return h == self.me;
            }
            if h != self.me && self.joining(h) {
                return held;
            }
        }
        if !self.live(self.me) {
            return false;
        }
        let known = || self.peers.keys().copied().filter(|&n| n < self.me);
        if known().any(|n| self.live(n)) {
            return false;
        }
        if known().any(|n| self.joining(n)) {
            return held;
        }
        true
    }

    /// Makes the forwarder answer for exactly the addresses this node should hold now.
    pub(super) fn apply(&mut self, fwd: &mut Forwarder) -> Change {
        let mut change = Change::default();
        let mut want: Vec<(IpAddr, bool)> = Vec::new();
        for g in &self.groups {
            let held = g.addrs.iter().any(|a| self.held.contains(a));
            let mine = self.should_hold(g, held);
            for ip in &g.addrs {
                want.push((*ip, mine));
            }
        }
        for (ip, mine) in want {
            let held = self.held.contains(&ip);
            if mine && !held {
                fwd.adopt_addr(ip);
                self.held.insert(ip);
                change.taken.push(ip);
            } else if !mine && held {
                if self.own.contains(&ip) {
                    fwd.set_quiet(ip, true);
                } else {
                    fwd.release_addr(ip);
                }
                self.held.remove(&ip);
                change.released.push(ip);
            }
        }
        change
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fwd::{ForwarderConfig, PortConfig};

    fn peer(node: u32, alive: bool, joining: bool) -> PeerInfo {
        PeerInfo {
            node: NodeId(node),
            addr: "10.9.0.1:8848".parse().unwrap(),
            epoch: 1,
            alive,
            joining,
            next_data_seq: 0,
            gap: false,
            resyncing: false,
        }
    }

    fn fwd(local: &str) -> Forwarder {
        let mut f = Forwarder::new(ForwarderConfig::default());
        f.add_port(PortConfig::new([2, 0, 0, 0, 2, 1]).with_addr("10.0.2.1/24".parse().unwrap()))
            .unwrap();
        f.add_local_addr(local.parse().unwrap());
        f
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn local_addresses_follow_their_home_then_the_lowest_live_node() {
        let groups = vec![
            AddrGroup { home: Some(NodeId(1)), addrs: vec![ip("10.0.2.21")] },
            AddrGroup { home: Some(NodeId(2)), addrs: vec![ip("10.0.2.22")] },
            AddrGroup { home: Some(NodeId(3)), addrs: vec![ip("10.0.2.23")] },
        ];
        let mut f = fwd("10.0.2.22");
        let mut t = Takeover::new(NodeId(2), groups, &mut f);
        assert!(!f.answers(ip("10.0.2.22")), "quiet until ready");
        t.set_ready(true);
        t.update(&[peer(1, true, false), peer(3, true, false)]);
        let c = t.apply(&mut f);
        assert_eq!(c.taken, vec![ip("10.0.2.22")]);
        assert!(f.answers(ip("10.0.2.22")) && !f.answers(ip("10.0.2.21")));
        // Node 1 dies: node 2 is the lowest live node and takes its address; 3 would not.
        t.update(&[peer(1, false, false), peer(3, true, false)]);
        let c = t.apply(&mut f);
        assert_eq!(c.taken, vec![ip("10.0.2.21")]);
        assert!(f.answers(ip("10.0.2.21")));
        // Node 1 is back but still joining: kept; once it is ready, released.
        t.peer_up(NodeId(1));
        assert!(t.apply(&mut f).released.is_empty());
        t.update(&[peer(1, true, false)]);
        assert_eq!(t.apply(&mut f).released, vec![ip("10.0.2.21")]);
        assert!(!f.answers(ip("10.0.2.21")), "a released address is no longer answered");
        assert!(f.answers(ip("10.0.2.22")));
    }

    #[test]
    fn floating_addresses_go_to_the_lowest_live_ready_node() {
        let groups = vec![AddrGroup { home: None, addrs: vec![ip("10.0.2.254")] }];
        let mut f = fwd("10.0.2.31");
        let mut t = Takeover::new(NodeId(2), groups, &mut f);
        t.set_ready(true);
        t.update(&[peer(1, true, false)]);
        assert!(t.apply(&mut f).taken.iter().all(|a| *a != ip("10.0.2.254")), "node 1 is active");
        t.peer_down(NodeId(1));
        assert_eq!(t.apply(&mut f).taken, vec![ip("10.0.2.254")]);
        t.set_ready(false);
        let c = t.apply(&mut f);
        assert!(c.released.contains(&ip("10.0.2.254")) && c.released.contains(&ip("10.0.2.31")));
        assert!(!f.answers(ip("10.0.2.31")), "own addresses go quiet, not away");
    }

    #[test]
    fn at_a_cold_start_nobody_takes_what_a_joining_node_will_hold() {
        let groups = vec![
            AddrGroup { home: Some(NodeId(1)), addrs: vec![ip("10.0.2.21")] },
            AddrGroup { home: Some(NodeId(2)), addrs: vec![ip("10.0.2.22")] },
            AddrGroup { home: None, addrs: vec![ip("10.0.2.254")] },
        ];
        let mut f = fwd("10.0.2.22");
        let mut t = Takeover::new(NodeId(2), groups, &mut f);
        t.peer_up(NodeId(1));
        t.set_ready(true);
        let c = t.apply(&mut f);
        assert_eq!(
            c.taken,
            vec![ip("10.0.2.22")],
            "node 1 is joining: its address and the float wait"
        );
        // Node 1 dies before it is ready: its address and the float come here.
        t.peer_down(NodeId(1));
        let mut c = t.apply(&mut f).taken;
        c.sort();
        assert_eq!(c, vec![ip("10.0.2.21"), ip("10.0.2.254")]);
    }
}
