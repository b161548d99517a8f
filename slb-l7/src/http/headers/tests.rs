use super::*;
use crate::http::request::{RequestLimits, parse_request};
use crate::http::response::parse_response;

fn rewrite(req: &[u8], fwd: &ForwardInfo<'_>, body_len: u64) -> String {
    let mut spans = Vec::new();
    let head = parse_request(req, &RequestLimits::default(), &mut spans).unwrap().unwrap();
    let mut out = Vec::new();
    write_request_head(&mut out, req, &head, &spans, body_len, fwd);
    String::from_utf8(out).unwrap()
}

fn fwd(rules: &HeaderRules) -> ForwardInfo<'_> {
    ForwardInfo {
        client_ip: "192.0.2.7",
        proto: "https",
        forwarded_for: ForwardedFor::Append,
        host_override: None,
        default_host: "10.0.0.1:80",
        rules,
        cookie_edit: None,
    }
}

#[test]
fn request_hop_by_hop_and_forwarded_fields() {
    let rules = HeaderRules::default();
    let out = rewrite(
        b"GET /p HTTP/1.1\r\nHost: ex.com\r\nConnection: keep-alive, X-Secret\r\nKeep-Alive: 5\r\nTE: trailers\r\n\
          X-Secret: 1\r\nProxy-Connection: x\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2\r\n\
          X-Real-IP: 6.6.6.6\r\nAccept: */*\r\n\r\n",
        &fwd(&rules),
        0,
    );
    assert_eq!(
        out,
        "GET /p HTTP/1.1\r\nHost: ex.com\r\nAccept: */*\r\nX-Forwarded-For: 1.1.1.1, 2.2.2.2, 192.0.2.7\r\n\
         X-Real-IP: 192.0.2.7\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: ex.com\r\n\r\n"
    );
}

#[test]
fn replace_mode_rules_and_bodies() {
    let rules = HeaderRules {
        remove: vec![b"cookie".to_vec().into()],
        add: vec![("X-Via".into(), "slb".into())],
    };
    let mut f = fwd(&rules);
    f.forwarded_for = ForwardedFor::Replace;
    f.host_override = Some("internal");
    let out = rewrite(
        b"POST /p HTTP/1.1\r\nHost: ex.com\r\nX-Forwarded-For: 6.6.6.6\r\nCookie: a=1\r\n\
          Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
        &f,
        12,
    );
    assert_eq!(
        out,
        "POST /p HTTP/1.1\r\nHost: internal\r\nX-Forwarded-For: 192.0.2.7\r\nX-Real-IP: 192.0.2.7\r\n\
         X-Forwarded-Proto: https\r\nX-Forwarded-Host: ex.com\r\nContent-Length: 12\r\nX-Via: slb\r\n\r\n"
    );
}

#[test]
fn upgrade_is_forwarded() {
    let rules = HeaderRules::default();
    let out = rewrite(
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n",
        &fwd(&rules),
        0,
    );
    assert!(out.contains("Sec-WebSocket-Key: k\r\n"), "{out}");
    assert!(out.ends_with("Connection: upgrade\r\nUpgrade: websocket\r\n\r\n"), "{out}");
}

#[test]
fn response_head_rewrite() {
    let resp = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n\
                 Keep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\nServer: up\r\n\r\n";
    let mut spans = Vec::new();
    let head = parse_response(resp, false, 8192, &mut spans).unwrap().unwrap();
    let rules = HeaderRules {
        remove: vec![b"server".to_vec().into()],
        add: vec![("X-Proxy".into(), "slb".into())],
    };
    let mut out = Vec::new();
    let framing =
        ResponseFraming { keep_alive: true, chunked_passthrough: true, client_http10: false };
    write_response_head(&mut out, resp, &head, &spans, framing, &rules);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nX-Proxy: slb\r\n\r\n"
    );
    let mut out = Vec::new();
    let framing =
        ResponseFraming { keep_alive: false, chunked_passthrough: false, client_http10: true };
    write_response_head(&mut out, resp, &head, &spans, framing, &HeaderRules::default());
    let out = String::from_utf8(out).unwrap();
    assert!(
        !out.contains("Transfer-Encoding") && out.ends_with("Connection: close\r\n\r\n"),
        "{out}"
    );
}
