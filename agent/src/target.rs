//! From an invite link to what the agent connects to: the swarm id, the coordinator's WebSocket
//! URL (`ws://host:port/api/swarms/<swarm_id>/ws`, `wss://` for `https://`) and the join proof
//! the link's fragment carries (`#t=<token>`, `#c=<code>` or an owner link's `#owner=<key>`).

use client::route::{join_proof, owner_key, Route};
use shared_protocol::JoinProof;

/// Where and as whom to join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub swarm_id: String,
    /// The coordinator's origin as written (`http://127.0.0.1:8787`).
    pub origin: String,
    pub ws_url: String,
    /// The proof in the link's fragment, if it holds a well-formed one.
    pub proof: Option<JoinProof>,
}

/// Splits `scheme://authority/path…` into the WebSocket scheme, the origin and the rest.
fn split_origin(url: &str) -> Result<(&'static str, String, &str), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("'{url}' is not a link (http://… or https://…)"))?;
    let ws_scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => "ws",
        "https" | "wss" => "wss",
        other => return Err(format!("unsupported scheme '{other}' in '{url}'")),
    };
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains('@') || authority.contains(char::is_whitespace) {
        return Err(format!("'{url}' has no usable host"));
    }
    Ok((ws_scheme, format!("{scheme}://{authority}"), path))
}

/// Reads an invite link (`…/join/<swarm_id>#t=…`) or an owner link (`…/s/<swarm_id>`).
/// `coordinator` overrides the origin the WebSocket goes to, for a client served elsewhere.
pub fn parse_link(link: &str, coordinator: Option<&str>) -> Result<Target, String> {
    let link = link.trim();
    let (before, fragment) = link.split_once('#').unwrap_or((link, ""));
    let (ws_scheme, origin, path) = split_origin(before)?;
    let path = path.split('?').next().unwrap_or("");
    let swarm_id = match Route::parse(path) {
        Route::Join { swarm_id } | Route::Dashboard { swarm_id } | Route::Device { swarm_id } => {
            swarm_id
        }
        Route::Landing | Route::NotFound => {
            return Err(format!(
                "'{link}' names no swarm: expected …/join/<swarm id> or …/s/<swarm id>"
            ))
        }
    };
    let (ws_scheme, origin) = match coordinator {
        Some(coordinator) => {
            let (scheme, origin, rest) = split_origin(coordinator.trim())?;
            if !rest.trim_matches('/').is_empty() {
                return Err(format!(
                    "--coordinator wants an origin like https://host:port, got '{coordinator}'"
                ));
            }
            (scheme, origin)
        }
        None => (ws_scheme, origin),
    };
    let authority = origin.split_once("://").map_or("", |(_, a)| a);
    let proof = join_proof(fragment)
        .or_else(|| owner_key(fragment).map(|owner_key| JoinProof::OwnerKey { owner_key }));
    Ok(Target {
        ws_url: format!("{ws_scheme}://{authority}/api/swarms/{swarm_id}/ws"),
        swarm_id,
        origin,
        proof,
    })
}

/// The swarm's HTTP API (`http(s)://host/api/swarms/<id>`) from its socket's URL.
pub fn api_of(ws_url: &str) -> String {
    let url = ws_url.strip_suffix("/ws").unwrap_or(ws_url);
    match url.split_once("://") {
        Some(("wss", rest)) => format!("https://{rest}"),
        Some((_, rest)) => format!("http://{rest}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "45efa814ffe6315a10063ca3f8f44f38";

    #[test]
    fn an_invite_link_gives_the_socket_and_the_token() {
        let token = "k6Q4Rt5cnwe2sVTO0oLmqevFputIbiW3DAl0-kTprYo";
        let t = parse_link(&format!("http://127.0.0.1:8787/join/{ID}#t={token}"), None).unwrap();
        assert_eq!(t.swarm_id, ID);
        assert_eq!(t.origin, "http://127.0.0.1:8787");
        assert_eq!(t.ws_url, format!("ws://127.0.0.1:8787/api/swarms/{ID}/ws"));
        assert_eq!(
            t.proof,
            Some(JoinProof::Token {
                token: token.into()
            })
        );
    }

    #[test]
    fn the_api_is_beside_the_socket() {
        assert_eq!(
            api_of(&format!("ws://127.0.0.1:8787/api/swarms/{ID}/ws")),
            format!("http://127.0.0.1:8787/api/swarms/{ID}")
        );
        assert_eq!(
            api_of(&format!("wss://swarm.example/api/swarms/{ID}/ws")),
            format!("https://swarm.example/api/swarms/{ID}")
        );
    }

    #[test]
    fn https_becomes_wss_and_codes_are_normalised() {
        let t = parse_link(
            &format!("https://swarm.example/join/{ID}#c=fkhq7-zh4hm"),
            None,
        )
        .unwrap();
        assert_eq!(t.ws_url, format!("wss://swarm.example/api/swarms/{ID}/ws"));
        assert_eq!(
            t.proof,
            Some(JoinProof::Code {
                code: "FKHQ7ZH4HM".into()
            })
        );
    }

    #[test]
    fn an_owner_link_names_the_swarm_with_or_without_its_key() {
        let t = parse_link(&format!("http://h:1/s/{ID}"), None).unwrap();
        assert_eq!((t.swarm_id.as_str(), t.proof), (ID, None));
        let key = "K".repeat(43);
        let t = parse_link(&format!("http://h:1/s/{ID}#owner={key}"), None).unwrap();
        assert_eq!(t.proof, Some(JoinProof::OwnerKey { owner_key: key }));
    }

    #[test]
    fn a_bad_proof_leaves_the_swarm_but_no_proof() {
        let t = parse_link(&format!("http://h/join/{ID}#t=bogus"), None).unwrap();
        assert_eq!((t.swarm_id.as_str(), t.proof), (ID, None));
        let t = parse_link(&format!("http://h/join/{ID}?x=1"), None).unwrap();
        assert_eq!(t.ws_url, format!("ws://h/api/swarms/{ID}/ws"));
    }

    #[test]
    fn the_coordinator_can_live_elsewhere() {
        let t = parse_link(
            &format!("https://pages.example/join/{ID}#t={}", "t".repeat(43)),
            Some("https://api.example:8443/"),
        )
        .unwrap();
        assert_eq!(
            t.ws_url,
            format!("wss://api.example:8443/api/swarms/{ID}/ws")
        );
        assert!(parse_link(&format!("http://h/join/{ID}"), Some("http://c/x")).is_err());
    }

    #[test]
    fn links_without_a_swarm_are_refused() {
        for bad in [
            "",
            "127.0.0.1:8787/join/x",
            "ftp://h/join/45efa814ffe6315a10063ca3f8f44f38",
            "http:///join/45efa814ffe6315a10063ca3f8f44f38",
            "http://h/",
            "http://h/join/not-an-id",
        ] {
            assert!(parse_link(bad, None).is_err(), "{bad}");
        }
    }
}
