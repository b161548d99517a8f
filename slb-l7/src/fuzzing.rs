//! Fuzz harnesses, shared by the cargo-fuzz targets in `fuzz/` (`l7_request_head`, `l7_config`,
//! `l7_proxy_protocol`, `l7_sticky_cookie`) and by the test that replays their committed corpora.
//! All take arbitrary bytes and must never panic; the request-head harness also checks that what
//! the proxy would send upstream is itself a valid, unambiguous request, the PROXY protocol one
//! that the incremental parser agrees with itself and with the writers, the sticky cookie one
//! that a value decodes to at most one session and that edits do what they say.

use crate::config::Config;
use crate::http::chunked::ChunkedDecoder;
use crate::http::headers::{
    ForwardInfo, ForwardedFor, HeaderRules, ResponseFraming, write_request_head,
    write_response_head,
};
use crate::http::request::{RequestLimits, parse_request};
use crate::http::response::parse_response;
use crate::http::{Framing, HeadError};
use crate::proxy_protocol::{self as pp, ProxyAddrs};
use crate::sticky::cookie::{
    CookieEdit, CookieRewrite, CookieValue, StickyKey, edit_cookie_header, find_cookie,
    set_cookie_name,
};

/// Request head path: parse, rewrite for the upstream, re-parse the rewrite; the body after the
/// head through the chunked decoder; the same bytes as a response head.
pub fn request_head_case(data: &[u8]) {
    let limits =
        RequestLimits { max_head: 4096, max_headers: 32, max_uri: 1024, max_body: 1 << 16 };
    let mut spans = Vec::new();
    match parse_request(data, &limits, &mut spans) {
        Ok(Some(head)) => {
            assert!(head.head_len <= data.len() && head.head_len <= limits.max_head);
            if let Framing::Length(n) = head.framing {
                assert!(n > 0 && n <= limits.max_body);
            }
            let rules = HeaderRules {
                remove: vec![b"cookie".to_vec().into()],
                add: vec![("X-Added".into(), "1".into())],
            };
            let fwd = ForwardInfo {
                client_ip: "192.0.2.1",
                proto: "http",
                forwarded_for: if data.len() % 2 == 0 {
                    ForwardedFor::Append
                } else {
                    ForwardedFor::Replace
                },
                host_override: None,
                default_host: "10.0.0.1:80",
                rules: &rules,
                cookie_edit: None,
            };
            let body_len = match head.framing {
                Framing::Length(n) => n,
                Framing::Chunked => 7,
                _ => 0,
            };
            let mut out = Vec::new();
            write_request_head(&mut out, data, &head, &spans, body_len, &fwd);
            let big = RequestLimits {
                max_head: 1 << 20,
                max_headers: 256,
                max_uri: 1 << 20,
                max_body: u64::MAX,
            };
            let mut again = Vec::new();
            let re = parse_request(&out, &big, &mut again);
            let re = match re {
                Ok(Some(r)) => r,
                other => panic!(
                    "rewritten head does not parse: {other:?}\n{}",
                    String::from_utf8_lossy(&out)
                ),
            };
            assert_eq!(re.head_len, out.len());
            let want = if body_len > 0 { Framing::Length(body_len) } else { Framing::None };
            assert_eq!(re.framing, want, "upstream framing is exactly the buffered body");
            if head.framing == Framing::Chunked {
                let mut dec = ChunkedDecoder::new();
                let body = &data[head.head_len..];
                let mut total = 0usize;
                if let Ok(n) = dec.feed(body, |r| total += r.len()) {
                    assert!(n <= body.len());
                    assert_eq!(total as u64, dec.data_total());
                }
            }
        }
        Ok(None) => assert!(data.len() < limits.max_head),
        Err(HeadError::H2Preface) => assert!(data.starts_with(b"PRI * HTTP/2.0")),
        Err(e) => assert!(matches!(e.status(), 400 | 413 | 414 | 431 | 501)),
    }
    let mut rspans = Vec::new();
    if let Ok(Some(head)) = parse_response(data, data.first() == Some(&b'H'), 4096, &mut rspans) {
        let mut out = Vec::new();
        let framing = ResponseFraming {
            keep_alive: head.keep_alive,
            chunked_passthrough: true,
            client_http10: false,
        };
        write_response_head(&mut out, data, &head, &rspans, framing, &HeaderRules::default());
        let mut again = Vec::new();
        assert!(
            matches!(parse_response(&out, false, 1 << 20, &mut again), Ok(Some(_))),
            "rewritten response parses"
        );
    }
}

/// Configuration path: TOML text through parsing, validation and building a proxy (when it names
/// no files to read).
pub fn config_case(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(cfg) = Config::from_toml(text) else { return };
    assert!(cfg.validate().is_ok(), "a parsed configuration validates");
    let reads_files =
        cfg.listeners.iter().any(|l| l.tls.is_some()) || cfg.pools.values().any(|p| p.tls.enabled);
    if !reads_files {
        let _ = crate::Proxy::from_config(cfg);
    }
}

/// PROXY protocol path: the parser on the bytes and on prefixes of a header it accepted; the
/// addresses it found written back by both writers and parsed again.
pub fn proxy_protocol_case(data: &[u8]) {
    match pp::parse(data) {
        Ok(Some(h)) => {
            assert!(h.len <= data.len());
            match h.version {
                1 => assert!(h.len <= pp::V1_MAX),
                2 => assert!(h.len <= pp::MAX_V2_LEN),
                v => panic!("version {v}"),
            }
            // The header alone is the same header; any shorter prefix is incomplete.
            assert_eq!(pp::parse(&data[..h.len]), Ok(Some(h)));
            for cut in [h.len - 1, h.len / 2, 1] {
                assert_eq!(pp::parse(&data[..cut]), Ok(None), "prefix of {cut} bytes");
            }
            if let ProxyAddrs::Proxied { src, dst } = h.addrs {
                for write in [pp::write_v1, pp::write_v2] {
                    let mut out = Vec::new();
                    write(src, dst, &mut out);
                    let back = pp::parse(&out).expect("written headers parse").expect("complete");
                    assert_eq!(back.len, out.len());
                    assert_eq!(back.addrs, h.addrs);
                }
            }
        }
        Ok(None) => assert!(pp::looks_like_proxy(data), "incomplete but not a PROXY header"),
        Err(_) => {}
    }
}

/// Sticky cookie path: the value decoder (a value that decodes encodes back to the same bytes;
/// its times checked against limits from the input), the Cookie field edits and the Set-Cookie
/// rewrites. The first byte picks the key and the limits.
pub fn sticky_cookie_case(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else { return };
    let key = StickyKey::derive(&[sel & 3]);
    if let Ok(v) = CookieValue::decode(&key, rest) {
        let mut again = String::new();
        v.encode(&key, &mut again);
        assert_eq!(again.as_bytes(), rest, "one encoding per value");
        let n = |i: usize| rest.get(i).map_or(0, |&b| u32::from(b) << (sel % 24));
        let _ = v.check(n(0).wrapping_mul(n(1)), n(2), n(3));
    }
    let name: &[u8] = if sel & 4 == 0 { b"route" } else { b"SERVERID" };
    let _ = find_cookie(rest, name);
    let mut out = Vec::new();
    if edit_cookie_header(rest, CookieEdit::Remove(name), &mut out) {
        assert!(!out.is_empty());
    }
    assert_eq!(find_cookie(&out, name), None, "removed: {:?}", String::from_utf8_lossy(&out));
    out.clear();
    edit_cookie_header(rest, CookieEdit::StripPrefix(name), &mut out);
    assert!(out.len() <= 2 * rest.len(), "an edit does not grow much");
    let _ = set_cookie_name(rest);
    let name = String::from_utf8_lossy(name).into_owned().into_boxed_str();
    for rw in [
        CookieRewrite::Rewrite { name: name.clone(), value: "0123456789abcdef".into() },
        CookieRewrite::Prefix { name: name.clone(), prefix: "0123456789abcdef".into() },
    ] {
        if let Some(new) = rw.rewrite_set_cookie(rest) {
            assert_eq!(set_cookie_name(&new), Some(name.as_bytes()), "same cookie rewritten");
        }
    }
}
