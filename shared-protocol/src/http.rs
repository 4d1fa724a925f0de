//! HTTP request and response bodies of the coordinator's REST endpoints.

use garde::Validate;
use serde::{Deserialize, Serialize};

use crate::messages::{Counters, ErrorCode};
use crate::text::{is_code, is_label};

/// `POST /api/swarms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct CreateSwarmRequest {
    #[garde(custom(is_label))]
    pub name: String,
}

/// `201 Created` answer to [`CreateSwarmRequest`]. The owner key is shown only here, once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSwarmResponse {
    pub swarm_id: String,
    pub owner_key: String,
}

/// `POST /api/join`: which swarm a short code belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct ResolveCodeRequest {
    #[garde(custom(is_code))]
    pub code: String,
}

/// `200` answer to [`ResolveCodeRequest`]. The device then says hello to that swarm with the
/// code as its [`crate::JoinProof`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveCodeResponse {
    pub swarm_id: String,
}

/// `GET /api/swarms/{id}`: public facts about a swarm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwarmInfo {
    pub swarm_id: String,
    pub swarm_name: String,
    pub created_ms: u64,
}

/// `GET /api/swarms/{id}/stats` (owner only): what the coordinator object is doing, so that
/// its cost can be measured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwarmStats {
    /// Open WebSockets.
    pub connections: u32,
    /// When the object's alarm is armed for (wall-clock ms), as the platform reports it;
    /// `null` when none is armed.
    pub alarm_at_ms: Option<u64>,
    /// The counters since the object last started.
    pub counters: Counters,
    /// When the object last started (wall-clock ms): it changes exactly when the object
    /// restarts (eviction, deploy, crash), so two equal readings prove none happened between.
    pub started_ms: u64,
    /// Of `connections`, those each gateway object holds (`[]` while the swarm has none).
    #[serde(default)]
    pub gateways: Vec<u32>,
}

/// `GET /api/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthResponse {
    pub ok: bool,
    pub protocol: u16,
}

/// The body of every non-2xx HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpError {
    pub code: ErrorCode,
    pub message: String,
    /// With `rate_limited` (also sent as the `Retry-After` header, in seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// A workload module as stored for a swarm: the answer to uploading one
/// (`PUT /api/swarms/{id}/modules/{sha256}`: 201 when this upload stored it, 200 when it was
/// stored already).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleInfo {
    /// SHA-256 of the bytes uploaded, in lowercase hex: the module's name.
    pub sha256: String,
    /// Size of the bytes uploaded.
    pub bytes: u64,
    /// Size of the bytes devices run (the upload with the ABI's memory maximum written in).
    pub prepared_bytes: u64,
    /// The memory's initial and maximum size, in 64 KiB pages, as devices run it.
    pub memory_pages: [u64; 2],
}
