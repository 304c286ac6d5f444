use super::*;
use crate::config;

fn peer(id: &str) -> Peer {
    Peer {
        spiffe_id: id.into(),
        cert_sha256_hex: "ab".into(),
    }
}

/// The authorization of the first listener of a snapshot with `authorization` JSON.
fn compile(authorization: &str) -> (Authorization, Arc<Stats>) {
    let json =
        format!(r#"{{"listeners": [{{"name": "in", "address": "127.0.0.1:0", "authorization": {authorization}}}]}}"#);
    let mut cfg = config::parse(&json).unwrap();
    let stats = Arc::new(Stats::default());
    let a = Authorization::new(cfg.listeners.remove(0).authorization.unwrap(), &stats);
    (a, stats)
}

fn policies(list: &str) -> String {
    format!(r#"{{"policies": {list}}}"#)
}

struct Req<'a> {
    peer: Option<Peer>,
    method: &'a str,
    path: &'a str,
    host: &'a str,
    port: u16,
}

fn req() -> Req<'static> {
    Req {
        peer: None,
        method: "GET",
        path: "/",
        host: "svc",
        port: 15006,
    }
}

impl Req<'_> {
    fn eval(&self, a: &Authorization) -> Result<(), String> {
        let attrs = Attributes::new(self.peer.as_ref(), self.method, self.path, self.host, self.port);
        a.evaluate(&attrs).map_err(|d| String::from_utf8(d.0.to_vec()).unwrap())
    }
}

const NO_MATCH: &str = "RBAC: access denied: no ALLOW policy matched\n";

fn allow_to(op: &str) -> Authorization {
    compile(&policies(&format!(
        r#"[{{"name": "ns/p", "action": "ALLOW", "rules": [{{"to": [{op}]}}]}}]"#
    )))
    .0
}

fn allow_from(src: &str) -> Authorization {
    compile(&policies(&format!(
        r#"[{{"name": "ns/p", "action": "ALLOW", "rules": [{{"from": [{src}]}}]}}]"#
    )))
    .0
}

#[test]
fn patterns_exact_prefix_suffix_any() {
    let p = Patterns::new(&["/exact", "/api/*", "*.json"], false).unwrap();
    assert!(p.matches("/exact"));
    assert!(!p.matches("/exact/"));
    assert!(p.matches("/api/"));
    assert!(p.matches("/api/v1/x"));
    assert!(!p.matches("/api"));
    assert!(p.matches("/x/y.json"));
    assert!(!p.matches("/x/y.jsonp"));
    let any = Patterns::new(&["*"], false).unwrap();
    assert!(any.matches(""));
    assert!(any.matches("anything"));
    let hosts = Patterns::new(&["*.Example.com", "API.local"], true).unwrap();
    assert!(hosts.matches("a.EXAMPLE.com"));
    assert!(hosts.matches("api.LOCAL"));
    assert!(!hosts.matches("example.com"));
    let cased = Patterns::new(&["/Admin"], false).unwrap();
    assert!(!cased.matches("/admin"), "paths are case-sensitive");
}

#[test]
fn patterns_refuse_inner_and_double_wildcards() {
    for bad in ["a*b", "*a*", "**", ""] {
        assert!(Patterns::new(&[bad], false).is_err(), "{bad:?}");
    }
}

#[test]
fn no_authorization_policies_allow_everything() {
    let (a, _) = compile(&policies("[]"));
    assert_eq!(req().eval(&a), Ok(()));
}

#[test]
fn default_deny_without_allow_policies_denies() {
    let (a, stats) = compile(r#"{"default_deny": true, "policies": []}"#);
    assert_eq!(req().eval(&a).unwrap_err(), NO_MATCH);
    assert_eq!(stats.authz_denied_no_match.load(Relaxed), 1);
}

#[test]
fn default_deny_with_a_matching_allow_policy_allows() {
    let (a, _) = compile(
        r#"{"default_deny": true, "policies": [{"name": "ns/get", "action": "ALLOW", "rules": [{"to": [{"methods": ["GET"]}]}]}]}"#,
    );
    assert_eq!(req().eval(&a), Ok(()));
    assert_eq!(
        Req {
            method: "POST",
            ..req()
        }
        .eval(&a)
        .unwrap_err(),
        NO_MATCH
    );
}

#[test]
fn empty_rules_match_nothing() {
    // ALLOW with no rules: present, matches nothing: everything is denied.
    let (a, _) = compile(&policies(r#"[{"name": "ns/nothing", "action": "ALLOW"}]"#));
    assert_eq!(req().eval(&a).unwrap_err(), NO_MATCH);
    // DENY with no rules denies nothing.
    let (d, _) = compile(&policies(r#"[{"name": "ns/nothing", "action": "DENY", "rules": []}]"#));
    assert_eq!(req().eval(&d), Ok(()));
}

#[test]
fn a_rule_without_from_and_to_matches_everything() {
    let (a, _) = compile(&policies(r#"[{"name": "ns/all", "action": "DENY", "rules": [{}]}]"#));
    assert_eq!(req().eval(&a).unwrap_err(), "RBAC: access denied: policy ns/all\n");
}

#[test]
fn deny_overrides_allow_and_audit_never_decides() {
    let (a, stats) = compile(&policies(
        r#"[{"name": "ns/allow-all", "action": "ALLOW", "rules": [{}]},
            {"name": "ns/audit-admin", "action": "AUDIT", "rules": [{"to": [{"paths": ["/admin/*"]}]}]},
            {"name": "ns/deny-admin", "action": "DENY", "rules": [{"to": [{"paths": ["/admin/*"]}]}]},
            {"name": "ns/audit-all", "action": "AUDIT", "rules": [{}]}]"#,
    ));
    assert_eq!(
        Req {
            path: "/admin/x",
            ..req()
        }
        .eval(&a)
        .unwrap_err(),
        "RBAC: access denied: policy ns/deny-admin\n"
    );
    assert_eq!(
        Req {
            path: "/public",
            ..req()
        }
        .eval(&a),
        Ok(())
    );
    let count = |name: &str, action: &'static str| stats.authz_policy(name, action).load(Relaxed);
    assert_eq!(count("ns/deny-admin", "DENY"), 1);
    assert_eq!(count("ns/allow-all", "ALLOW"), 1, "not counted for the denied request");
    assert_eq!(count("ns/audit-admin", "AUDIT"), 1);
    assert_eq!(count("ns/audit-all", "AUDIT"), 2, "audited whatever the decision");
    assert_eq!(stats.authz_denied_no_match.load(Relaxed), 0);
}

#[test]
fn only_audit_policies_allow() {
    let (a, stats) = compile(&policies(r#"[{"name": "ns/audit", "action": "AUDIT", "rules": [{}]}]"#));
    assert_eq!(req().eval(&a), Ok(()));
    assert_eq!(stats.authz_policy("ns/audit", "AUDIT").load(Relaxed), 1);
}

#[test]
fn methods_and_not_methods() {
    let a = allow_to(r#"{"methods": ["GET", "HEAD"]}"#);
    assert_eq!(req().eval(&a), Ok(()));
    assert!(Req {
        method: "DELETE",
        ..req()
    }
    .eval(&a)
    .is_err());
    let a = allow_to(r#"{"not_methods": ["DELETE"]}"#);
    assert_eq!(
        Req {
            method: "POST",
            ..req()
        }
        .eval(&a),
        Ok(())
    );
    assert!(Req {
        method: "DELETE",
        ..req()
    }
    .eval(&a)
    .is_err());
}

#[test]
fn paths_and_not_paths() {
    let a = allow_to(r#"{"paths": ["/api/*", "/health"], "not_paths": ["/api/internal*", "*.secret"]}"#);
    assert_eq!(
        Req {
            path: "/api/users",
            ..req()
        }
        .eval(&a),
        Ok(())
    );
    assert_eq!(
        Req {
            path: "/health",
            ..req()
        }
        .eval(&a),
        Ok(())
    );
    assert!(Req {
        path: "/healthz",
        ..req()
    }
    .eval(&a)
    .is_err());
    assert!(Req {
        path: "/api/internal/x",
        ..req()
    }
    .eval(&a)
    .is_err());
    assert!(Req {
        path: "/api/k.secret",
        ..req()
    }
    .eval(&a)
    .is_err());
}

#[test]
fn ports_and_not_ports() {
    let a = allow_to(r#"{"ports": [15006]}"#);
    assert_eq!(req().eval(&a), Ok(()));
    assert!(Req { port: 15001, ..req() }.eval(&a).is_err());
    let a = allow_to(r#"{"not_ports": [15006]}"#);
    assert!(req().eval(&a).is_err());
    assert_eq!(Req { port: 15001, ..req() }.eval(&a), Ok(()));
}

#[test]
fn hosts_case_insensitive_and_not_hosts() {
    let a = allow_to(r#"{"hosts": ["*.example.com", "Reviews"], "not_hosts": ["admin.example.com"]}"#);
    assert_eq!(
        Req {
            host: "A.Example.COM",
            ..req()
        }
        .eval(&a),
        Ok(())
    );
    assert_eq!(
        Req {
            host: "reviews",
            ..req()
        }
        .eval(&a),
        Ok(())
    );
    assert!(Req {
        host: "ADMIN.example.com",
        ..req()
    }
    .eval(&a)
    .is_err());
    assert!(Req {
        host: "example.com",
        ..req()
    }
    .eval(&a)
    .is_err());
}

#[test]
fn fields_of_one_operation_all_hold_and_operations_are_alternatives() {
    let a = allow_to(r#"{"methods": ["POST"], "paths": ["/write"]}, {"methods": ["GET"]}"#);
    assert_eq!(
        Req {
            method: "POST",
            path: "/write",
            ..req()
        }
        .eval(&a),
        Ok(())
    );
    assert!(Req {
        method: "POST",
        path: "/other",
        ..req()
    }
    .eval(&a)
    .is_err());
    assert_eq!(
        Req {
            path: "/other",
            ..req()
        }
        .eval(&a),
        Ok(())
    );
}

#[test]
fn principals_exact_wildcards_and_plaintext() {
    let a = allow_from(r#"{"principals": ["spiffe://td/ns/default/sa/web"]}"#);
    let web = Some(peer("spiffe://td/ns/default/sa/web"));
    let other = Some(peer("spiffe://td/ns/default/sa/other"));
    assert_eq!(
        Req {
            peer: web.clone(),
            ..req()
        }
        .eval(&a),
        Ok(())
    );
    assert!(Req {
        peer: other.clone(),
        ..req()
    }
    .eval(&a)
    .is_err());
    assert!(req().eval(&a).is_err(), "plaintext has no principal");

    let any = allow_from(r#"{"principals": ["*"]}"#);
    assert_eq!(
        Req {
            peer: other.clone(),
            ..req()
        }
        .eval(&any),
        Ok(())
    );
    assert!(req().eval(&any).is_err(), "\"*\" means any authenticated caller");

    let prefix = allow_from(r#"{"principals": ["spiffe://td/ns/prod/*"]}"#);
    assert_eq!(
        Req {
            peer: Some(peer("spiffe://td/ns/prod/sa/x")),
            ..req()
        }
        .eval(&prefix),
        Ok(())
    );
    assert!(Req {
        peer: web.clone(),
        ..req()
    }
    .eval(&prefix)
    .is_err());

    let suffix = allow_from(r#"{"principals": ["*/sa/web"]}"#);
    assert_eq!(
        Req {
            peer: web.clone(),
            ..req()
        }
        .eval(&suffix),
        Ok(())
    );
    assert!(Req {
        peer: other.clone(),
        ..req()
    }
    .eval(&suffix)
    .is_err());
}

#[test]
fn not_principals_star_denies_plaintext() {
    // Istio's way to require mTLS: DENY from notPrincipals ["*"].
    let (a, _) = compile(&policies(
        r#"[{"name": "ns/require-mtls", "action": "DENY", "rules": [{"from": [{"not_principals": ["*"]}]}]}]"#,
    ));
    assert_eq!(
        req().eval(&a).unwrap_err(),
        "RBAC: access denied: policy ns/require-mtls\n"
    );
    assert_eq!(
        Req {
            peer: Some(peer("spiffe://td/ns/a/sa/b")),
            ..req()
        }
        .eval(&a),
        Ok(())
    );
}

#[test]
fn namespaces_from_the_spiffe_id() {
    let a = allow_from(r#"{"namespaces": ["prod", "team-*"], "not_namespaces": ["team-x"]}"#);
    let from = |id: &str| Req {
        peer: Some(peer(id)),
        ..req()
    };
    assert_eq!(from("spiffe://td/ns/prod/sa/web").eval(&a), Ok(()));
    assert_eq!(from("spiffe://td/ns/team-a/sa/web").eval(&a), Ok(()));
    assert!(from("spiffe://td/ns/team-x/sa/web").eval(&a).is_err());
    assert!(from("spiffe://td/ns/dev/sa/web").eval(&a).is_err());
    assert!(from("spiffe://td/workload").eval(&a).is_err(), "no namespace in the ID");
    assert!(req().eval(&a).is_err(), "plaintext has no namespace");
}

#[test]
fn from_and_to_must_both_match() {
    let (a, _) = compile(&policies(
        r#"[{"name": "ns/p", "action": "ALLOW", "rules": [
              {"from": [{"namespaces": ["prod"]}], "to": [{"methods": ["GET"]}]}]}]"#,
    ));
    let prod = Some(peer("spiffe://td/ns/prod/sa/web"));
    assert_eq!(
        Req {
            peer: prod.clone(),
            ..req()
        }
        .eval(&a),
        Ok(())
    );
    assert!(Req {
        peer: prod,
        method: "POST",
        ..req()
    }
    .eval(&a)
    .is_err());
    assert!(req().eval(&a).is_err());
}

#[test]
fn listeners_table_applies_to_its_own_address_only() {
    let (deny_all, _) = compile(&policies(r#"[{"name": "ns/all", "action": "DENY", "rules": [{}]}]"#));
    let here: SocketAddr = "127.0.0.1:15006".parse().unwrap();
    let there: SocketAddr = "127.0.0.1:15001".parse().unwrap();
    let table = Listeners::new(vec![(here, deny_all)]);
    let r = Request::builder().uri("/x").body(()).unwrap();
    assert!(table.check(here, None, &r, "svc").is_err());
    assert_eq!(table.check(there, None, &r, "svc"), Ok(()));
    assert_eq!(Listeners::default().check(here, None, &r, "svc"), Ok(()));
}
