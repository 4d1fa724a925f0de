//! Which page a URL shows, and the links the app hands out. Pages are plain paths served by
//! the SPA fallback: `/` (landing), `/s/{swarm}` (dashboard), `/s/{swarm}/device` (device
//! page), `/join/{swarm}` (joining through an invite). Secrets travel in the fragment
//! (`#t=`, `#c=`, `#owner=`), which browsers never send to a server.

use shared_protocol::{is_id, is_secret, normalize_code, JoinProof};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Landing,
    Dashboard { swarm_id: String },
    Device { swarm_id: String },
    Join { swarm_id: String },
    NotFound,
}

/// The link an invite's QR code and copy button carry.
pub fn invite_link(origin: &str, swarm_id: &str, token: &str) -> String {
    format!("{origin}/join/{swarm_id}#t={token}")
}

/// A job's JSON on the coordinator at `coordinator` (its HTTP origin, which is not the page's
/// when the client is served from Pages); the PNG of an image job is this plus `/image.png`.
pub fn job_url(coordinator: &str, swarm_id: &str, job_id: &str) -> String {
    format!("{coordinator}/api/swarms/{swarm_id}/jobs/{job_id}")
}

/// The link that opens a swarm's owner dashboard on another device.
pub fn owner_link(origin: &str, swarm_id: &str, owner_key: &str) -> String {
    format!("{origin}/s/{swarm_id}#owner={owner_key}")
}

/// The join page for a typed short code.
pub fn code_join_path(swarm_id: &str, code: &str) -> String {
    format!("/join/{swarm_id}#c={code}")
}

/// The invite proof in a join page's fragment (`#t=<token>` or `#c=<code>`).
pub fn join_proof(fragment: &str) -> Option<JoinProof> {
    let fragment = fragment.trim_start_matches('#');
    if let Some(token) = fragment.strip_prefix("t=") {
        return is_secret(token, &()).is_ok().then(|| JoinProof::Token {
            token: token.to_owned(),
        });
    }
    let code = fragment.strip_prefix("c=")?;
    normalize_code(code).map(|code| JoinProof::Code { code })
}

/// The owner key in a dashboard's fragment (`#owner=<key>`).
pub fn owner_key(fragment: &str) -> Option<String> {
    let key = fragment.trim_start_matches('#').strip_prefix("owner=")?;
    is_secret(key, &()).is_ok().then(|| key.to_owned())
}

impl Route {
    pub fn parse(path: &str) -> Self {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        match segments.as_slice() {
            [] => Route::Landing,
            ["s", id] if is_id(id, &()).is_ok() => Route::Dashboard {
                swarm_id: (*id).to_owned(),
            },
            ["s", id, "device"] if is_id(id, &()).is_ok() => Route::Device {
                swarm_id: (*id).to_owned(),
            },
            ["join", id] if is_id(id, &()).is_ok() => Route::Join {
                swarm_id: (*id).to_owned(),
            },
            _ => Route::NotFound,
        }
    }

    pub fn dashboard_path(swarm_id: &str) -> String {
        format!("/s/{swarm_id}")
    }

    pub fn device_path(swarm_id: &str) -> String {
        format!("/s/{swarm_id}/device")
    }
}

/// Storage keys (localStorage) so that every page agrees on them.
pub mod keys {
    pub fn owner_key(swarm_id: &str) -> String {
        format!("ostrich.owner.{swarm_id}")
    }

    pub fn device_credential(swarm_id: &str) -> String {
        format!("ostrich.device.{swarm_id}")
    }

    pub const DEVICE_NAME: &str = "ostrich.device-name";

    /// How many cores this browser lends to the swarm (0 = paused).
    pub fn lend(swarm_id: &str) -> String {
        format!("ostrich.lend.{swarm_id}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_links_point_at_the_coordinator_not_the_page() {
        assert_eq!(
            job_url("https://swarm.example", "ab", "cd"),
            "https://swarm.example/api/swarms/ab/jobs/cd"
        );
    }

    const ID: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn paths_map_to_pages() {
        assert_eq!(Route::parse("/"), Route::Landing);
        assert_eq!(Route::parse(""), Route::Landing);
        assert_eq!(
            Route::parse(&Route::dashboard_path(ID)),
            Route::Dashboard {
                swarm_id: ID.into()
            }
        );
        assert_eq!(
            Route::parse(&format!("{}/", Route::device_path(ID))),
            Route::Device {
                swarm_id: ID.into()
            }
        );
        assert_eq!(Route::parse("/s/not-an-id"), Route::NotFound);
        assert_eq!(Route::parse("/s/ID/device/x"), Route::NotFound);
        assert_eq!(Route::parse("/elsewhere"), Route::NotFound);
        assert_eq!(
            Route::parse(&format!("/join/{ID}")),
            Route::Join {
                swarm_id: ID.into()
            }
        );
    }

    #[test]
    fn invite_links_carry_their_proof_in_the_fragment() {
        let token = "T".repeat(43);
        let link = invite_link("https://swarm.example", ID, &token);
        assert_eq!(link, format!("https://swarm.example/join/{ID}#t={token}"));
        let fragment = &link[link.find('#').unwrap()..];
        assert_eq!(join_proof(fragment), Some(JoinProof::Token { token }));
        assert_eq!(
            join_proof("#c=abcde-fghjk"),
            Some(JoinProof::Code {
                code: "ABCDEFGHJK".into()
            })
        );
        assert_eq!(join_proof("#t=short"), None);
        assert_eq!(join_proof("#c=nope"), None);
        assert_eq!(join_proof(""), None);
        let key = "k".repeat(43);
        let link = owner_link("https://x", ID, &key);
        assert_eq!(owner_key(&link[link.find('#').unwrap()..]), Some(key));
        assert_eq!(owner_key("#owner=bad key"), None);
    }
}
