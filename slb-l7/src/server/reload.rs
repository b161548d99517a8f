//! Reload: a new configuration applied to a running proxy without failing a request.
//!
//! Everything new is built off to the side first (pools, routing table, client settings); if any
//! of it fails, the error names the field and nothing changed. Then, in order: pools whose
//! settings are unchanged get the new backend list in place (one atomic scheduler swap; backends
//! that stay keep counters, health, connections, sticky templates); pools whose settings changed
//! are replaced by new pools that take over the old ones' state for the backends that remain;
//! the routing table and settings are swapped in one store; replaced and removed pools are
//! retired (their health tasks end; requests already using them finish there).
//!
//! What a reload cannot change (bound sockets and process-wide settings: `listeners`,
//! `status.address`, `admin.address`, `server.workers`, `server.secret`,
//! `server.upgrade_socket`) is refused with an error that says so: a binary upgrade
//! ([`crate::upgrade`]) re-reads everything.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::{ProxyHandle, build, mark_builder_tls, spawn_pool_tasks, validate_with_builder_tls};
use crate::admin::AdminError;
use crate::config::{Config, ConfigError, ConfigIssue, PoolConfig};
use crate::pool::{Keep, Pool};
use crate::proxy::Active;

/// What a reload did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Pools whose backend list was updated in place.
    pub updated: Vec<String>,
    /// Pools rebuilt with new settings (state carried over).
    pub rebuilt: Vec<String>,
    /// New pools.
    pub added: Vec<String>,
    /// Pools no longer configured.
    pub removed: Vec<String>,
}

/// `pc` without its backends, for comparing settings.
fn settings_only(pc: &PoolConfig) -> PoolConfig {
    PoolConfig { backends: Vec::new(), ..pc.clone() }
}

fn unchangeable(old: &Config, new: &Config) -> Vec<ConfigIssue> {
    let mut issues = Vec::new();
    let mut check = |field: &str, same: bool| {
        if !same {
            issues.push(ConfigIssue {
                field: field.into(),
                line: None,
                message: "cannot change on reload (sockets and process settings); use a binary upgrade or a restart".into(),
            });
        }
    };
    check("listeners", old.listeners == new.listeners);
    check("status.address", old.status.address == new.status.address);
    check("admin.address", old.admin.address == new.admin.address);
    check("server.workers", old.server.workers == new.server.workers);
    check("server.secret", old.server.secret == new.server.secret);
    check("server.upgrade_socket", old.server.upgrade_socket == new.server.upgrade_socket);
    issues
}

impl ProxyHandle {
    /// Applies `config` (with the builder's [`config_overrides`](crate::ProxyBuilder::config_overrides),
    /// if any; see the module docs). On error nothing changed.
    pub fn reload(&self, mut config: Config) -> Result<ReloadSummary, AdminError> {
        let shared = &self.shared;
        let ctx = &shared.ctx;
        let mut current = shared.current.lock();
        if let Some(o) = &current.overrides {
            o.apply(&mut config);
        }
        mark_builder_tls(&mut config, &ctx.builder_tls);
        validate_with_builder_tls(&config, &ctx.builder_tls)?;
        let issues = unchangeable(&current.config, &config);
        if !issues.is_empty() {
            return Err(ConfigError { issues }.into());
        }
        let old_pools: HashMap<String, Arc<Pool>> =
            shared.pools.load().iter().map(|p| (p.name().to_owned(), p.clone())).collect();
        let mut summary = ReloadSummary::default();
        // Build first: nothing is touched until everything was built.
        enum Plan {
            Update(Arc<Pool>),
            Replace(Arc<Pool>, Arc<Pool>, Keep),
            Add(Arc<Pool>),
        }
        let mut plans = Vec::new();
        for (name, pc) in &config.pools {
            let old_pc = current.config.pools.get(name);
            let plan = match (old_pools.get(name), old_pc) {
                (Some(p), Some(opc)) if settings_only(opc) == settings_only(pc) => {
                    Plan::Update(p.clone())
                }
                (Some(p), Some(opc)) => {
                    let keep_sticky =
                        (opc.sticky == pc.sticky).then(|| p.settings.sticky.clone()).flatten();
                    let np = build::build_pool(name, pc, ctx, Some(p), keep_sticky)?;
                    let keep = Keep {
                        connections: opc.tls == pc.tls && opc.proxy_protocol == pc.proxy_protocol,
                        health: opc.health == pc.health,
                        passive: opc.passive == pc.passive,
                    };
                    Plan::Replace(p.clone(), np, keep)
                }
                _ => Plan::Add(build::build_pool(name, pc, ctx, None, None)?),
            };
            plans.push((name.clone(), pc, plan));
        }
        // Commit.
        let mut pools = HashMap::new();
        let mut new_pools = Vec::new();
        for (name, pc, plan) in plans {
            let specs = |old: Option<&Pool>| match old {
                Some(p) if ctx.discovered.contains(&name) => p.specs(),
                _ => build::backend_specs(pc),
            };
            let pool = match plan {
                Plan::Update(p) => {
                    p.set_backends(specs(Some(&p)));
                    summary.updated.push(name.clone());
                    p
                }
                Plan::Replace(old, np, keep) => {
                    np.inherit(&old, specs(Some(&old)), keep);
                    summary.rebuilt.push(name.clone());
                    new_pools.push(np.clone());
                    np
                }
                Plan::Add(np) => {
                    np.set_backends(specs(None));
                    summary.added.push(name.clone());
                    new_pools.push(np.clone());
                    np
                }
            };
            pools.insert(name, pool);
        }
        let router = build::build_router(&config, &pools);
        let settings = build::settings_of(&config);
        let list: Vec<Arc<Pool>> =
            config.pools.keys().filter_map(|n| pools.get(n).cloned()).collect();
        shared.pools.store(Arc::new(list));
        shared.active.store(Arc::new(Active { router, settings }));
        for (name, old) in &old_pools {
            let kept = pools.get(name).is_some_and(|p| Arc::ptr_eq(p, old));
            if !kept {
                old.retire();
                if !pools.contains_key(name) {
                    summary.removed.push(name.clone());
                }
            }
        }
        if let Some((rt, rx)) = shared.background.lock().as_ref() {
            let _guard = rt.enter();
            for p in new_pools {
                drop(spawn_pool_tasks(p, rx));
            }
        }
        current.config = config;
        tracing::info!(?summary, "configuration reloaded");
        Ok(summary)
    }

    /// Reads, validates and applies the TOML file at `path` (which becomes the file that
    /// [`ProxyHandle::reload_from_file`] re-reads).
    pub fn reload_file(&self, path: &Path) -> Result<ReloadSummary, AdminError> {
        let cfg = Config::from_file(path)?;
        let summary = self.reload(cfg)?;
        self.shared.current.lock().path = Some(path.to_owned());
        Ok(summary)
    }

    /// Re-reads the configuration file the proxy was built from (SIGHUP, `POST /reload`).
    pub fn reload_from_file(&self) -> Result<ReloadSummary, AdminError> {
        let path = self.shared.current.lock().path.clone().ok_or_else(|| {
            AdminError::Invalid(
                "the proxy was not built from a file; send the configuration".into(),
            )
        })?;
        self.reload_file(&path)
    }
}
