//! The browser client. Natively this crate is its plain core — connection logic, routing and
//! device facts — tested with `cargo test`; on wasm32 it adds the Leptos views and browser
//! glue in [`app`] that only read and drive that core.

pub mod chart;
pub mod device_info;
pub mod format;
pub mod forms;
pub mod jobs;
pub mod link;
pub mod pace;
pub mod qr;
pub mod route;
pub mod work;

#[cfg(target_arch = "wasm32")]
pub mod app;
#[cfg(target_arch = "wasm32")]
mod browser;
