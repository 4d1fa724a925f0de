//! Coordinator settings from the Worker's vars (wrangler.toml `[vars]`, or `--var` in tests).

use swarm_core::verify::VerifyPolicy;
use swarm_core::Config as CoreConfig;
use worker::Env;

/// Everything configurable at deploy time.
pub struct Config {
    pub core: CoreConfig,
    /// Extra origins allowed to open WebSockets, besides the coordinator's own.
    pub allowed_origins: Vec<String>,
    /// How long a gateway object gathers its sockets' events before it hands them to the
    /// swarm's object in one call (`GATEWAY_BATCH_MS`).
    pub gateway_batch_ms: u64,
}

/// [`Config::gateway_batch_ms`] when unset: a tenth of a second adds little to a chunk of
/// seconds, and under load it makes one call of many results.
const GATEWAY_BATCH_MS: u64 = 100;

impl Config {
    pub fn from_env(env: &Env) -> Self {
        let defaults = CoreConfig::default();
        let core = CoreConfig {
            heartbeat_interval_ms: millis(
                env,
                "HEARTBEAT_INTERVAL_MS",
                defaults.heartbeat_interval_ms,
            ),
            offline_after_ms: millis(env, "OFFLINE_AFTER_MS", defaults.offline_after_ms),
            broadcast_interval_ms: millis(
                env,
                "BROADCAST_INTERVAL_MS",
                defaults.broadcast_interval_ms,
            ),
            hello_timeout_ms: millis(env, "HELLO_TIMEOUT_MS", defaults.hello_timeout_ms),
            commit_interval_ms: millis(env, "COMMIT_INTERVAL_MS", defaults.commit_interval_ms),
            dashboard_read_timeout_ms: millis(
                env,
                "DASHBOARD_READ_TIMEOUT_MS",
                defaults.dashboard_read_timeout_ms,
            ),
            default_invite_ttl_ms: millis(
                env,
                "DEFAULT_INVITE_TTL_MS",
                defaults.default_invite_ttl_ms,
            ),
            rate_window_ms: millis(env, "RATE_WINDOW_MS", defaults.rate_window_ms),
            results_per_second_budget: u32::try_from(count(
                env,
                "RESULTS_PER_SECOND",
                u64::from(defaults.results_per_second_budget),
            ))
            .unwrap_or(defaults.results_per_second_budget)
            .max(1),
            sockets_per_gateway: usize::try_from(count(
                env,
                "SOCKETS_PER_GATEWAY",
                u64::try_from(defaults.sockets_per_gateway).unwrap_or(u64::MAX),
            ))
            .unwrap_or(defaults.sockets_per_gateway),
            verify: VerifyPolicy {
                trust_after: u32::try_from(count(
                    env,
                    "TRUST_AFTER",
                    u64::from(defaults.verify.trust_after),
                ))
                .unwrap_or(defaults.verify.trust_after),
                audit_one_in: count(env, "AUDIT_ONE_IN", defaults.verify.audit_one_in).max(1),
                ..defaults.verify
            },
            ..defaults
        };
        let allowed_origins = var(env, "ALLOWED_ORIGINS")
            .map(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|o| !o.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        Self {
            core,
            allowed_origins,
            gateway_batch_ms: count(env, "GATEWAY_BATCH_MS", GATEWAY_BATCH_MS),
        }
    }
}

fn var(env: &Env, name: &str) -> Option<String> {
    env.var(name).ok().map(|v| v.to_string())
}

/// A count (0 allowed); a missing or unparsable value falls back to the default.
fn count(env: &Env, name: &str, default: u64) -> u64 {
    match var(env, name).map(|v| v.trim().parse::<u64>()) {
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            worker::console_warn!("ignoring {name}: not a whole number");
            default
        }
        None => default,
    }
}

/// A positive millisecond setting; a missing or unparsable value falls back to the default.
fn millis(env: &Env, name: &str, default: u64) -> u64 {
    match var(env, name).map(|v| v.trim().parse::<u64>()) {
        Some(Ok(ms)) if ms > 0 => ms,
        Some(_) => {
            worker::console_warn!("ignoring {name}: not a positive number of milliseconds");
            default
        }
        None => default,
    }
}
