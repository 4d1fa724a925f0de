//! The dashboard bundle: the landing page (`/`) and a swarm's dashboard (`/s/{swarm}`), for its
//! owner or a viewer. `pages/index.html` loads it for every path the device bundle does not
//! serve; only the views it mounts are linked in, so it carries none of the device page.

/// Entry point: mounts the dashboard app.
#[cfg(target_arch = "wasm32")]
#[wasm_bindgen::prelude::wasm_bindgen(start)]
pub fn start() {
    leptos::mount::mount_to_body(client::app::DashboardApp);
}
