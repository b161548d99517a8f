//! Three engines over the unicast transport on 127.0.0.1: real sockets, real threads.

mod common;

use std::time::Duration;

use common::*;
use slb_sync::transport::UnicastTransport;

#[test]
fn three_nodes_replicate_and_a_late_joiner_gets_the_table() {
    let mut ts: Vec<UnicastTransport> = (0..3)
        .map(|_| UnicastTransport::bind("127.0.0.1:0".parse().unwrap(), vec![]).unwrap())
        .collect();
    let addrs: Vec<_> = ts.iter().map(|t| t.local_addr().unwrap()).collect();
    for (i, t) in ts.iter_mut().enumerate() {
        t.set_peers(addrs.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, a)| *a).collect());
    }
    let t3 = ts.pop().unwrap();
    let n2 = NetNode::start(2, true, ts.pop().unwrap());
    let n1 = NetNode::start(1, true, ts.pop().unwrap());
    assert!(
        wait_until(Duration::from_secs(10), || n1.ready() && n2.ready()),
        "first nodes never ready"
    );

    n1.originate(1, 0..300);
    n2.originate(2, 0..300);
    assert!(
        wait_until(Duration::from_secs(10), || n1.learned() == 300 && n2.learned() == 300),
        "no convergence: {} {}",
        n1.learned(),
        n2.learned()
    );

    let n3 = NetNode::start(3, true, t3);
    assert!(wait_until(Duration::from_secs(10), || n3.ready()), "joiner never ready");
    assert_eq!(n3.learned(), 600, "the joiner had the whole table when it became ready");

    n3.originate(3, 0..100);
    assert!(wait_until(Duration::from_secs(10), || n1.learned() == 400 && n2.learned() == 400));

    for n in [&n1, &n2, &n3] {
        let s = n.handle.status().expect("driver answers");
        assert_eq!(s.stats.rx_bad_mac + s.stats.rx_malformed + s.stats.rx_wrong_cluster, 0);
        assert_eq!((s.send_errors, s.local_shed), (0, 0));
        assert_eq!(s.peers.iter().filter(|p| p.alive).count(), 2, "{:?}", s.peers);
    }
    let s3 = n3.handle.status().unwrap();
    assert_eq!(s3.stats.resync_completed, 2);
    n3.handle.shutdown();
}
