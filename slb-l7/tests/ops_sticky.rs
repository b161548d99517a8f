//! Stickiness over real sockets: every cookie mode and source-IP persistence keep a client on
//! one backend while round robin would rotate, fall back to the scheduler when that backend is
//! drained, and ignore cookies a client made up.

mod common;

use common::*;
use slb_l7::RunningProxy;

const POOL: &str = r#"
default_pool = "app"
[[listeners]]
address = "127.0.0.1:0"
[pools.app]
backends = ["{b0}", "{b1}", "{b2}"]
"#;

async fn three() -> [Backend; 3] {
    [Backend::start("a").await, Backend::start("b").await, Backend::start("c").await]
}

/// `name=value` of a Set-Cookie field.
fn pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().trim().to_owned()
}

/// Sends `n` requests with `cookie` and returns the backends that answered.
async fn served_by(p: &RunningProxy, cookie: &str, n: usize) -> Vec<String> {
    let addr = p.local_addr("main").unwrap();
    let mut v = Vec::new();
    for i in 0..n {
        let r = get_with(addr, &format!("/s/{i}"), &format!("Cookie: {cookie}\r\n")).await;
        assert_eq!(r.status, 200);
        v.push(r.header("x-backend").unwrap().to_owned());
    }
    v
}

fn addr_of<'a>(bs: &'a [Backend], name: &str) -> &'a Backend {
    bs.iter().find(|b| b.name == name).unwrap()
}

#[tokio::test]
async fn insert_mode_sticks_hides_the_cookie_and_falls_back_when_drained() {
    let bs = three().await;
    let toml =
        format!("{POOL}sticky = {{ type = \"cookie\", cookie = \"SRV\", indirect = true }}\n");
    let p = proxy(&toml, &[&bs[0], &bs[1], &bs[2]]).await;
    let addr = p.local_addr("main").unwrap();
    let first = get(addr, "/").await;
    let set = first.header("set-cookie").expect("the proxy inserts its cookie").to_owned();
    assert!(set.starts_with("SRV=") && set.contains("Path=/") && set.contains("HttpOnly"), "{set}");
    let owner = first.header("x-backend").unwrap().to_owned();
    let cookie = format!("theme=dark; {}", pair(&set));
    let seen = served_by(&p, &cookie, 9).await;
    assert!(seen.iter().all(|b| *b == owner), "round robin would rotate; sticky stays: {seen:?}");
    // indirect: the backend sees the client's other cookies but never the sticky one.
    let last = addr_of(&bs, &owner).seen.lock().last().cloned().unwrap();
    assert_eq!(last.header("cookie"), Some("theme=dark"));
    // A client with a valid cookie for the backend that answers gets no new one.
    let again = get_with(addr, "/", &format!("Cookie: {cookie}\r\n")).await;
    assert_eq!(again.header("set-cookie"), None);

    p.handle().drain_backend("app", addr_of(&bs, &owner).addr).unwrap();
    let moved = get_with(addr, "/", &format!("Cookie: {cookie}\r\n")).await;
    assert_eq!(moved.status, 200);
    let new_owner = moved.header("x-backend").unwrap().to_owned();
    assert_ne!(new_owner, owner, "a drained sticky backend falls back to the scheduler");
    let new_cookie = pair(moved.header("set-cookie").expect("re-stuck to the new backend"));
    let seen = served_by(&p, &new_cookie, 6).await;
    assert!(seen.iter().all(|b| *b == new_owner), "{seen:?}");
    p.shutdown().await;
}

#[tokio::test]
async fn made_up_or_tampered_cookies_are_ignored() {
    let bs = three().await;
    let toml = format!("{POOL}sticky = {{ type = \"cookie\" }}\n");
    let p = proxy(&toml, &[&bs[0], &bs[1], &bs[2]]).await;
    let addr = p.local_addr("main").unwrap();
    let set = get(addr, "/").await.header("set-cookie").unwrap().to_owned();
    let value = pair(&set).strip_prefix("route=").unwrap().to_owned();
    let mut tampered = value.clone().into_bytes();
    tampered[0] = if tampered[0] == b'0' { b'1' } else { b'0' };
    let tampered = String::from_utf8(tampered).unwrap();
    for bogus in [tampered.as_str(), "0000000000000000", "zz", "ROUTE"] {
        let seen = served_by(&p, &format!("route={bogus}"), 6).await;
        let distinct: std::collections::HashSet<_> = seen.iter().collect();
        assert_eq!(distinct.len(), 3, "{bogus:?} must not steer: {seen:?}");
    }
    // Without indirect the backend sees the cookie as the client sent it.
    let r = get_with(addr, "/", &format!("Cookie: route={value}\r\n")).await;
    let b = addr_of(&bs, r.header("x-backend").unwrap());
    assert_eq!(
        b.seen.lock().last().unwrap().header("cookie"),
        Some(format!("route={value}").as_str())
    );
    p.shutdown().await;
}

#[tokio::test]
async fn maxidle_cookies_carry_signed_times_and_stick() {
    let bs = three().await;
    let toml =
        format!("{POOL}sticky = {{ type = \"cookie\", maxidle = \"1h\", maxlife = \"24h\" }}\n");
    let p = proxy(&toml, &[&bs[0], &bs[1], &bs[2]]).await;
    let addr = p.local_addr("main").unwrap();
    let first = get(addr, "/").await;
    let c = pair(first.header("set-cookie").unwrap());
    assert_eq!(c.len(), "route=".len() + 48, "token, first, last and MAC: {c}");
    let owner = first.header("x-backend").unwrap().to_owned();
    assert!(served_by(&p, &c, 6).await.iter().all(|b| *b == owner));
    p.handle().drain_backend("app", addr_of(&bs, &owner).addr).unwrap();
    let seen = served_by(&p, &c, 4).await;
    assert!(seen.iter().all(|b| *b != owner), "drained: {seen:?}");
    p.shutdown().await;
}

#[tokio::test]
async fn cookies_past_maxidle_or_maxlife_are_scheduled_afresh() {
    use slb_l7::sticky::cookie::{CookieValue, StickyKey, Times};
    let bs = three().await;
    // A known secret, so that the test can sign session times itself.
    let toml = format!(
        "{POOL}sticky = {{ type = \"cookie\", maxidle = \"1h\", maxlife = \"24h\" }}\n[server]\nsecret = \"test secret\"\n"
    );
    let p = proxy(&toml, &[&bs[0], &bs[1], &bs[2]]).await;
    let addr = p.local_addr("main").unwrap();
    let key = StickyKey::derive(b"test secret");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
        as u32;
    let cookie_for = |b: &Backend, first: u32, last: u32| {
        let token = key.server_token("app", b.addr);
        let mut v = String::from("route=");
        CookieValue { token, times: Some(Times { first, last }) }.encode(&key, &mut v);
        v
    };
    // Fresh times signed with the key: the cookie holds.
    let fresh = cookie_for(&bs[1], now - 60, now - 10);
    assert!(served_by(&p, &fresh, 6).await.iter().all(|b| b == "b"));
    // Idle for two hours (maxidle 1h), or started two days ago (maxlife 24h): no longer sticky,
    // the client gets a new session cookie.
    for (first, last) in [(now - 3 * 3600, now - 2 * 3600), (now - 2 * 86400, now - 10)] {
        let stale = cookie_for(&bs[1], first, last);
        let seen = served_by(&p, &stale, 6).await;
        let distinct: std::collections::HashSet<_> = seen.iter().collect();
        assert_eq!(distinct.len(), 3, "an expired cookie must not steer: {seen:?}");
        let r = get_with(addr, "/", &format!("Cookie: {stale}\r\n")).await;
        let new = pair(r.header("set-cookie").expect("a new session cookie"));
        let v = CookieValue::decode(&key, new.strip_prefix("route=").unwrap().as_bytes()).unwrap();
        assert!(v.times.unwrap().first >= now, "a new session starts now: {new}");
    }
    p.shutdown().await;
}

#[tokio::test]
async fn rewrite_mode_replaces_the_backends_cookie_value() {
    let bs = three().await;
    for b in &bs {
        b.set(Behavior::SetCookie("route=app-session; Path=/app".into()));
    }
    let toml = format!("{POOL}sticky = {{ type = \"cookie\", mode = \"rewrite\" }}\n");
    let p = proxy(&toml, &[&bs[0], &bs[1], &bs[2]]).await;
    let addr = p.local_addr("main").unwrap();
    let first = get(addr, "/").await;
    let set = first.header("set-cookie").unwrap().to_owned();
    assert!(set.ends_with("; Path=/app") && !set.contains("app-session"), "{set}");
    let owner = first.header("x-backend").unwrap().to_owned();
    let seen = served_by(&p, &pair(&set), 8).await;
    assert!(seen.iter().all(|b| *b == owner), "{seen:?}");
    p.handle().drain_backend("app", addr_of(&bs, &owner).addr).unwrap();
    let seen = served_by(&p, &pair(&set), 4).await;
    assert!(seen.iter().all(|b| *b != owner), "drained: {seen:?}");
    p.shutdown().await;
}

#[tokio::test]
async fn prefix_mode_prefixes_and_strips_the_backends_cookie() {
    let bs = three().await;
    for b in &bs {
        b.set(Behavior::SetCookie("JSESSIONID=s42; HttpOnly".into()));
    }
    let toml = format!(
        "{POOL}sticky = {{ type = \"cookie\", mode = \"prefix\", cookie = \"JSESSIONID\" }}\n"
    );
    let p = proxy(&toml, &[&bs[0], &bs[1], &bs[2]]).await;
    let addr = p.local_addr("main").unwrap();
    let first = get(addr, "/").await;
    let set = first.header("set-cookie").unwrap().to_owned();
    let c = pair(&set);
    assert!(c.starts_with("JSESSIONID=") && c.ends_with("~s42"), "{set}");
    let owner = first.header("x-backend").unwrap().to_owned();
    let seen = served_by(&p, &format!("{c}; lang=en"), 8).await;
    assert!(seen.iter().all(|b| *b == owner), "{seen:?}");
    let last = addr_of(&bs, &owner).seen.lock().last().cloned().unwrap();
    assert_eq!(
        last.header("cookie"),
        Some("JSESSIONID=s42; lang=en"),
        "the backend sees its own value"
    );
    p.handle().drain_backend("app", addr_of(&bs, &owner).addr).unwrap();
    let seen = served_by(&p, &c, 4).await;
    assert!(seen.iter().all(|b| *b != owner), "drained: {seen:?}");
    p.shutdown().await;
}

#[tokio::test]
async fn source_ip_sticks_through_templates_and_falls_back_when_drained() {
    let bs = three().await;
    let toml = format!("{POOL}sticky = {{ type = \"source_ip\", timeout = \"5m\" }}\n");
    let p = proxy(&toml, &[&bs[0], &bs[1], &bs[2]]).await;
    let seen = served_by(&p, "x=1", 9).await;
    let owner = seen[0].clone();
    assert!(seen.iter().all(|b| *b == owner), "one client address, one backend: {seen:?}");
    let pool = p.handle().pool("app").unwrap();
    assert_eq!(pool.sticky_templates(), 1);
    p.handle().drain_backend("app", addr_of(&bs, &owner).addr).unwrap();
    let seen = served_by(&p, "x=1", 6).await;
    let next = seen[0].clone();
    assert_ne!(next, owner);
    assert!(seen.iter().all(|b| *b == next), "re-stuck to the fallback: {seen:?}");
    // Enabled again: the template now names the fallback, so the client stays there.
    p.handle().enable_backend("app", addr_of(&bs, &owner).addr, true).unwrap();
    assert!(served_by(&p, "x=1", 4).await.iter().all(|b| *b == next));
    p.shutdown().await;
}

// curl runs as a blocking child process: the proxy needs a runtime thread of its own meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_cookies_work_over_http2() {
    let bs = three().await;
    let toml = format!("{POOL}sticky = {{ type = \"cookie\" }}\n");
    let p = proxy(&toml, &[&bs[0], &bs[1], &bs[2]]).await;
    let addr = p.local_addr("main").unwrap();
    let out = std::process::Command::new("curl")
        .args(["-s", "--http2-prior-knowledge", "-D", "-", "-o", "/dev/null"])
        .arg(format!("http://{addr}/h2"))
        .output();
    let Ok(out) = out else {
        eprintln!("curl not found: h2 cookie check skipped");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    let line = text.lines().find(|l| l.starts_with("set-cookie:")).expect(&text).to_owned();
    let owner = text.lines().find(|l| l.starts_with("x-backend:")).unwrap().to_owned();
    let cookie = pair(line.trim_start_matches("set-cookie:").trim());
    for _ in 0..4 {
        let out = std::process::Command::new("curl")
            .args(["-s", "--http2-prior-knowledge", "-D", "-", "-o", "/dev/null", "-H"])
            .arg(format!("Cookie: {cookie}"))
            .arg(format!("http://{addr}/h2"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
        assert!(text.lines().any(|l| l == owner), "{text}");
    }
    p.shutdown().await;
}
