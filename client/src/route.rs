//! Which page a URL path shows. Pages are plain paths served by the SPA fallback:
//! `/` (landing), `/s/{swarm}` (dashboard), `/s/{swarm}/device` (device page).

use shared_protocol::is_id;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Landing,
    Dashboard { swarm_id: String },
    Device { swarm_id: String },
    NotFound,
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
