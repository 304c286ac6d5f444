//! Validation of `listeners[].authorization` into the compiled rules of `crate::authz`.

use std::collections::HashSet;

use crate::authz::{
    Action, AuthorizationConfig, Condition, Operation, Patterns, PolicyConfig, PortCondition, Rule, Source,
};
use crate::error::ConfigError;

use super::wire::{RawAction, RawAuthorization, RawOperation, RawSource};

pub(super) fn authorization(raw: RawAuthorization, field: &str) -> Result<AuthorizationConfig, ConfigError> {
    let mut names = HashSet::new();
    let mut policies = Vec::with_capacity(raw.policies.len());
    for (i, p) in raw.policies.into_iter().enumerate() {
        let field = format!("{field}.policies[{i}]");
        if p.name.is_empty() {
            return Err(ConfigError::invalid(format!("{field}.name"), "must not be empty"));
        }
        if !names.insert(p.name.clone()) {
            return Err(ConfigError::invalid(
                format!("{field}.name"),
                format!("duplicate policy {:?}", p.name),
            ));
        }
        let mut rules = Vec::with_capacity(p.rules.len());
        for (j, r) in p.rules.into_iter().enumerate() {
            let field = format!("{field}.rules[{j}]");
            let from = r
                .from
                .into_iter()
                .enumerate()
                .map(|(k, s)| source(&s, &format!("{field}.from[{k}]")))
                .collect::<Result<_, _>>()?;
            let to =
                r.to.into_iter()
                    .enumerate()
                    .map(|(k, o)| operation(o, &format!("{field}.to[{k}]")))
                    .collect::<Result<_, _>>()?;
            rules.push(Rule { from, to });
        }
        policies.push(PolicyConfig {
            name: p.name,
            action: match p.action {
                RawAction::Allow => Action::Allow,
                RawAction::Deny => Action::Deny,
                RawAction::Audit => Action::Audit,
            },
            rules,
        });
    }
    Ok(AuthorizationConfig {
        default_deny: raw.default_deny,
        policies,
    })
}

fn patterns(list: &[String], field: &str, name: &str, fold_case: bool) -> Result<Patterns, ConfigError> {
    Patterns::new(list, fold_case).map_err(|(i, m)| ConfigError::invalid(format!("{field}.{name}[{i}]"), m))
}

fn condition(
    any_of: &[String],
    none_of: &[String],
    field: &str,
    name: &str,
    fold_case: bool,
) -> Result<Condition, ConfigError> {
    Ok(Condition {
        any_of: patterns(any_of, field, name, fold_case)?,
        none_of: patterns(none_of, field, &format!("not_{name}"), fold_case)?,
    })
}

fn source(s: &RawSource, field: &str) -> Result<Source, ConfigError> {
    for (name, list) in [("principals", &s.principals), ("not_principals", &s.not_principals)] {
        if let Some(i) = list
            .iter()
            .position(|p| !p.starts_with("spiffe://") && !p.starts_with('*'))
        {
            return Err(ConfigError::invalid(
                format!("{field}.{name}[{i}]"),
                format!("{:?} is not a spiffe:// URI (or a \"*\" wildcard)", list[i]),
            ));
        }
    }
    Ok(Source {
        principals: condition(&s.principals, &s.not_principals, field, "principals", false)?,
        namespaces: condition(&s.namespaces, &s.not_namespaces, field, "namespaces", false)?,
    })
}

fn operation(o: RawOperation, field: &str) -> Result<Operation, ConfigError> {
    for (name, list) in [("ports", &o.ports), ("not_ports", &o.not_ports)] {
        if let Some(i) = list.iter().position(|&p| p == 0) {
            return Err(ConfigError::invalid(
                format!("{field}.{name}[{i}]"),
                "must be between 1 and 65535",
            ));
        }
    }
    for (name, list) in [("paths", &o.paths), ("not_paths", &o.not_paths)] {
        if let Some(i) = list.iter().position(|p| !p.starts_with('/') && !p.starts_with('*')) {
            return Err(ConfigError::invalid(
                format!("{field}.{name}[{i}]"),
                format!("must start with \"/\" or \"*\" (got {:?})", list[i]),
            ));
        }
    }
    Ok(Operation {
        methods: condition(&o.methods, &o.not_methods, field, "methods", false)?,
        paths: condition(&o.paths, &o.not_paths, field, "paths", false)?,
        ports: PortCondition {
            any_of: o.ports,
            none_of: o.not_ports,
        },
        hosts: condition(&o.hosts, &o.not_hosts, field, "hosts", true)?,
    })
}
