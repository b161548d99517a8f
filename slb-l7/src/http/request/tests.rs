use super::*;

fn parse(s: &[u8]) -> Result<Option<RequestHead>, HeadError> {
    parse_request(s, &RequestLimits::default(), &mut Vec::new())
}

fn ok(s: &[u8]) -> RequestHead {
    parse(s).unwrap().unwrap()
}

#[test]
fn simple_get() {
    let buf = b"GET /a/b?c=1 HTTP/1.1\r\nHost: Example.com:8080\r\nAccept: */*\r\n\r\nNEXT";
    let h = ok(buf);
    assert_eq!(h.head_len, buf.len() - 4);
    assert_eq!(h.method(buf), b"GET");
    assert_eq!(h.path(buf), b"/a/b?c=1");
    assert_eq!(h.host(buf), Some(&b"Example.com:8080"[..]));
    assert_eq!(h.framing, Framing::None);
    assert!(h.keep_alive && h.idempotent && !h.is_head);
    let mut spans = Vec::new();
    parse_request(buf, &RequestLimits::default(), &mut spans).unwrap();
    assert_eq!(spans.len(), 2);
    assert_eq!(spans[1].name(buf), b"Accept");
    assert_eq!(spans[1].value(buf), b"*/*");
}

#[test]
fn incomplete_until_the_empty_line() {
    assert_eq!(parse(b"GET / HTTP/1.1\r\nHost: a\r\n"), Ok(None));
    assert_eq!(parse(b"PRI * HTTP/2"), Ok(None), "a prefix of the h2 preface waits");
    assert_eq!(parse(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), Err(HeadError::H2Preface));
}

#[test]
fn bodies_and_framing() {
    let h = ok(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(h.framing, Framing::Length(5));
    assert!(!h.idempotent);
    let h = ok(b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\nExpect: 100-continue\r\n\r\n");
    assert_eq!(h.framing, Framing::Chunked);
    assert!(h.expect_continue);
    let h = ok(b"PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(h.framing, Framing::None);
}

#[test]
fn smuggling_shapes_are_rejected() {
    let bad = |s: &[u8]| parse(s).unwrap_err();
    assert_eq!(
        bad(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
        HeadError::BadRequest("both Content-Length and Transfer-Encoding")
    );
    assert_eq!(
        bad(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n")
            .status(),
        400
    );
    assert_eq!(
        bad(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n")
            .status(),
        400
    );
    assert_eq!(bad(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n").status(), 400);
    assert_eq!(bad(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n").status(), 400);
    assert_eq!(
        bad(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n").status(),
        501
    );
    assert_eq!(
        bad(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n").status(),
        501
    );
    assert_eq!(
        bad(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n").status(),
        501
    );
    assert_eq!(bad(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n").status(), 400);
    assert_eq!(bad(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n").status(), 400, "obs-fold");
    assert_eq!(
        bad(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\n").status(),
        400,
        "space before colon"
    );
    assert_eq!(bad(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n").status(), 400, "NUL");
    assert_eq!(bad(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").status(), 400, "two Hosts");
    assert_eq!(bad(b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n").status(), 400, "no Host");
    assert_eq!(bad(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n").status(), 400);
    assert_eq!(bad(b"GET / HTTP/1.1\r\nHost: user@a\r\n\r\n").status(), 400);
    assert_eq!(bad(b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n").status(), 501);
    assert_eq!(bad(b"GET / HTTP/3.0\r\nHost: a\r\n\r\n").status(), 400);
    assert_eq!(bad(b"GET nothing HTTP/1.1\r\nHost: a\r\n\r\n").status(), 400);
}

#[test]
fn limits_give_413_414_431() {
    let limits = RequestLimits { max_head: 256, max_headers: 4, max_uri: 64, max_body: 10 };
    let mut v = Vec::new();
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(100));
    assert_eq!(parse_request(long_uri.as_bytes(), &limits, &mut v), Err(HeadError::UriTooLong));
    let partial_long_uri = format!("GET /{}", "a".repeat(100));
    assert_eq!(
        parse_request(partial_long_uri.as_bytes(), &limits, &mut v),
        Err(HeadError::UriTooLong)
    );
    let many = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\n\r\n";
    assert_eq!(parse_request(many.as_bytes(), &limits, &mut v), Err(HeadError::HeadersTooLarge));
    let big = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n", "b".repeat(300));
    assert_eq!(parse_request(big.as_bytes(), &limits, &mut v), Err(HeadError::HeadersTooLarge));
    let body = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n";
    assert_eq!(parse_request(body.as_bytes(), &limits, &mut v), Err(HeadError::BodyTooLarge));
}

#[test]
fn http10_and_connection_semantics() {
    let h = ok(b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!((h.minor, h.keep_alive, h.host), (0, false, None));
    let h = ok(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert!(h.keep_alive);
    let h = ok(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    assert!(!h.keep_alive);
    let buf = b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n";
    let h = ok(buf);
    assert_eq!(h.upgrade.map(|r| &buf[r]), Some(&b"websocket"[..]));
    let h = ok(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n");
    assert_eq!(h.upgrade, None, "Upgrade without Connection: upgrade is ignored");
}

#[test]
fn absolute_form_takes_the_host_from_the_target() {
    let buf = b"GET http://Example.com/p?q HTTP/1.1\r\nHost: other\r\n\r\n";
    let h = ok(buf);
    assert_eq!(h.host(buf), Some(&b"Example.com"[..]));
    assert_eq!(h.path(buf), b"/p?q");
    let buf = b"GET http://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n";
    assert_eq!(ok(buf).path(buf), b"");
    let h = ok(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(h.idempotent);
}
