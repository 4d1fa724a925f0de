//! The device bundle: the page a phone opens from an invite (`/join/{swarm}`) and the device
//! page (`/s/{swarm}/device`). `pages/index.html` loads it for those paths; only the views it
//! mounts are linked in, so it carries none of the dashboard.

/// Entry point: mounts the device app.
#[cfg(target_arch = "wasm32")]
#[wasm_bindgen::prelude::wasm_bindgen(start)]
pub fn start() {
    leptos::mount::mount_to_body(client::app::DeviceApp);
}
