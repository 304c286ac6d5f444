use super::*;
use crate::config;
use crate::route::tests::compiled;
use crate::route::Route;
use crate::snapshot::Snapshot;
use http::Method;

fn rule(s: &Snapshot) -> &Route {
    s.vhosts
        .select("x")
        .unwrap()
        .route(&Method::GET, "/", None, &HeaderMap::new())
        .unwrap()
}

fn split(session: &str, a: u32, b: u32) -> Snapshot {
    compiled(&format!(
        r#"[{{"name": "r", "session": {session},
              "backends": [{{"backend": "a", "weight": {a}}}, {{"backend": "b", "weight": {b}}}]}}]"#
    ))
}

fn cookie(value: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(COOKIE, HeaderValue::from_str(value).unwrap());
    h
}

/// (backend name, Set-Cookie) of one request.
fn go(r: &Route, headers: &HeaderMap) -> (String, Option<String>) {
    let (t, set) = r.pick_for(headers).unwrap();
    let name = t.backend.as_ref().unwrap().name.to_string();
    (name, set.map(|v| v.to_str().unwrap().to_owned()))
}

#[test]
fn token_is_a_fixed_hash_of_the_name_not_the_name() {
    // Fixed across processes and releases: a cookie handed out before an upgrade still pins.
    assert_eq!(
        token("default/reviews-v1:8080"),
        format!("{:016x}", hash(b"default/reviews-v1:8080"))
    );
    assert_eq!(token("a"), token("a"));
    assert_ne!(token("default/reviews-v1:8080"), token("default/reviews-v2:8080"));
    assert_eq!(token("default/reviews-v1:8080").len(), 16);
    assert!(!token("default/reviews-v1:8080").contains("reviews"));
    assert_eq!(hash(b""), hash(b""));
    assert_ne!(hash(b"user-1"), hash(b"user-2"));
}

#[test]
fn without_a_cookie_the_weighted_choice_sets_one_naming_it() {
    let s = split(r#"{"type": "Cookie", "name": "sticky"}"#, 3, 1);
    let r = rule(&s);
    let mut counts = std::collections::HashMap::new();
    for _ in 0..400 {
        let (name, set) = go(r, &HeaderMap::new());
        assert_eq!(set, Some(format!("sticky={}; Path=/; HttpOnly", token(&name))));
        *counts.entry(name).or_insert(0) += 1;
    }
    assert_eq!(
        (counts["a"], counts["b"]),
        (300, 100),
        "the plain smooth weighted split"
    );
}

#[test]
fn a_cookie_pins_to_its_backend_while_it_has_weight() {
    let s = split(r#"{"type": "Cookie", "name": "sticky", "max_age_s": 3600}"#, 99, 1);
    let r = rule(&s);
    let to_b = cookie(&format!("other=1; sticky={}; x=y", token("b")));
    for _ in 0..100 {
        assert_eq!(go(r, &to_b), ("b".to_owned(), None), "pinned: no new cookie");
    }
    // An unknown token or another cookie's value: a fresh choice, and a cookie with Max-Age.
    let (name, set) = go(r, &cookie("sticky=0000000000000000"));
    assert_eq!(
        set,
        Some(format!("sticky={}; Path=/; HttpOnly; Max-Age=3600", token(&name)))
    );
    assert!(go(r, &cookie(&format!("notsticky={}", token("b")))).1.is_some());
    // HTTP/2 may send the cookie crumbs as separate headers.
    let mut crumbs = cookie("a=1");
    crumbs.append(
        COOKIE,
        HeaderValue::from_str(&format!("sticky={}", token("b"))).unwrap(),
    );
    assert_eq!(go(r, &crumbs), ("b".to_owned(), None));
}

#[test]
fn a_cookie_of_a_backend_at_weight_zero_gets_a_fresh_choice_and_cookie() {
    let s = split(r#"{"type": "Cookie", "name": "sticky"}"#, 1, 0);
    let (name, set) = go(rule(&s), &cookie(&format!("sticky={}", token("b"))));
    assert_eq!(name, "a");
    assert_eq!(set, Some(format!("sticky={}; Path=/; HttpOnly", token("a"))));
}

#[test]
fn the_cookie_survives_a_reload_that_reorders_and_reweights() {
    let before = split(r#"{"type": "Cookie", "name": "s"}"#, 90, 10);
    let mut h = HeaderMap::new();
    let (name, set) = loop {
        let (name, set) = go(rule(&before), &h);
        if name == "b" {
            break (name, set.unwrap());
        }
    };
    h.insert(COOKIE, HeaderValue::from_str(set.split(';').next().unwrap()).unwrap());
    // The new snapshot lists b first, with another weight: the token still names b.
    let after = compiled(
        r#"[{"name": "r", "session": {"type": "Cookie", "name": "s"},
             "backends": [{"backend": "b", "weight": 1}, {"backend": "a", "weight": 1000}]}]"#,
    );
    for _ in 0..50 {
        assert_eq!(go(rule(&after), &h), (name.clone(), None));
    }
}

fn user(id: usize) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("x-user", HeaderValue::from_str(&format!("user-{id}")).unwrap());
    h
}

#[test]
fn header_hash_is_consistent_and_canary_users_stay_as_it_grows() {
    const USERS: usize = 10_000;
    let header = r#"{"type": "Header", "name": "X-User"}"#;
    let mut previous: Option<Vec<String>> = None;
    for (stable, canary) in [(90, 10), (50, 50), (10, 90), (0, 100)] {
        let s = split(header, stable, canary);
        let r = rule(&s);
        let now: Vec<String> = (0..USERS).map(|u| go(r, &user(u)).0).collect();
        // Consistent: the same user, the same answer, no cookie to set.
        for u in (0..USERS).step_by(97) {
            assert_eq!(go(r, &user(u)), (now[u].clone(), None));
        }
        let on_canary = now.iter().filter(|n| *n == "b").count();
        let expected = USERS * canary as usize / 100;
        assert!(
            on_canary.abs_diff(expected) < USERS / 50,
            "{on_canary} of {USERS} on canary, want ~{expected}"
        );
        if let Some(prev) = &previous {
            let left = (0..USERS).filter(|&u| prev[u] == "b" && now[u] != "b").count();
            assert_eq!(left, 0, "a canary user moved back to stable at {stable}/{canary}");
        }
        previous = Some(now);
    }
}

#[test]
fn header_hash_without_the_header_is_the_weighted_choice() {
    let s = split(r#"{"type": "Header", "name": "x-user"}"#, 3, 1);
    let r = rule(&s);
    let b = (0..400).filter(|_| go(r, &HeaderMap::new()).0 == "b").count();
    assert_eq!(b, 100);
}

#[test]
fn by_point_walks_cumulative_weights_in_order() {
    assert_eq!(by_point(&[90, 10], 100, 0), 0);
    assert_eq!(by_point(&[90, 10], 100, u64::MAX), 1);
    assert_eq!(by_point(&[0, 5, 0, 5], 10, 0), 1, "weight 0 owns no point");
    assert_eq!(by_point(&[0, 5, 0, 5], 10, u64::MAX / 2 + 1), 3);
    assert_eq!(by_point(&[1_000_000, 1], 1_000_001, u64::MAX), 1);
}

fn refused(session: &str) -> String {
    let json = format!(
        r#"{{"backends": [{{"name": "a", "protocol": "http1", "endpoints": ["127.0.0.1:1"]}}],
            "vhosts": [{{"name": "v", "domains": ["*"], "routes": [
              {{"name": "r", "session": {session}, "backends": [{{"backend": "a", "weight": 1}}]}}]}}]}}"#
    );
    config::parse(&json).unwrap_err().to_string()
}

#[test]
fn bad_sessions_are_refused_naming_the_field() {
    let e = refused(r#"{"type": "Cookie", "name": "a b"}"#);
    assert!(
        e.contains("vhosts[0].routes[0].session.name") && e.contains("not a cookie name"),
        "{e}"
    );
    let e = refused(r#"{"type": "Cookie", "name": "s", "max_age_s": 0}"#);
    assert!(e.contains("vhosts[0].routes[0].session.max_age_s"), "{e}");
    let e = refused(r#"{"type": "Header", "name": "bad header"}"#);
    assert!(
        e.contains("vhosts[0].routes[0].session.name") && e.contains("not a header name"),
        "{e}"
    );
    let e = refused(r#"{"type": "Sticky", "name": "s"}"#);
    assert!(e.contains("vhosts[0].routes[0].session") && e.contains("Sticky"), "{e}");
    let e = refused(r#"{"type": "Cookie", "name": "s", "path": "/"}"#);
    assert!(e.contains("vhosts[0].routes[0].session") && e.contains("path"), "{e}");
}
